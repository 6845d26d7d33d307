"""Exporting a trained run as the organisers' 2025 inference package (SPEC section 7).

The package folder ``<out_dir>/<label>/`` holds ``pyproject.toml``, ``test_complexity.py``,
``evaluate_submission.py`` and the package ``<label>/``: one module ``<label>_<index>.py`` per
submission index (from ``submission_template/submission_module.py``), its checkpoint with 16-bit
parameters (int8 convolution weights and 16-bit scales and biases for an 8-bit system) and its settings
in ``ckpts/``, the project code they run, and ``resources/`` (the development-test split, a dummy clip).
A new index leaves the others alone.

The files the package holds besides the index's checkpoint: ``helpers/outputs/package_files.py``.
"""
import hashlib
import json
import re
from pathlib import Path

import torch

from dataset.dcase25 import split_file
from helpers.files import atomic_path, write_text
from helpers.outputs.complexity import complexity_markdown, device_models_complexity, over_limits
from helpers.outputs.package_files import TEMPLATE_DIR, ExportError, fill, package_config, shared_files
from helpers.setup.checkpoints import hyper_parameters, resolve_checkpoint
from helpers.setup.model_loader import read_device_system
from models.inference import store_for_submission
from models.registry import build_frontend, network_record

# the organisers' label: <last name>_<institute abbreviation>_task1, e.g. Schmid_CPJKU_task1
LABEL_PATTERN = re.compile(r"^[A-Z][A-Za-z]*_[A-Za-z][A-Za-z0-9]*_task1$")
INDICES = (1, 2, 3, 4)
DEFAULT_SPLIT_DIR = "split_setup"  # the training scripts' default --split_dir


def check_label(label: str) -> str:
    if not LABEL_PATTERN.match(label or ""):
        raise ExportError(
            f"--submission_name {label!r} is not a submission label. The organisers' form is "
            "<Lastname>_<INSTITUTE>_task1, e.g. Schmid_CPJKU_task1: the corresponding author's last name "
            "(ASCII letters, starting with a capital), the institute's abbreviation (letters and digits, "
            "starting with a letter) and _task1, joined by underscores. It names the Python package, so it "
            "must not contain spaces, hyphens or accents.")
    return label


def check_index(index) -> int:
    if isinstance(index, bool) or not isinstance(index, int) or index not in INDICES:
        raise ExportError(f"--submission_index {index!r}: a submission has the indices 1 to 4 (up to four "
                          "systems per team).")
    return index



def index_module_path(package_dir: Path, label: str, index: int) -> Path:
    return package_dir / label / f"{label}_{index}.py"


def existing_indices(package_dir: Path, label: str) -> list:
    return [i for i in INDICES if index_module_path(package_dir, label, i).is_file()
            or (package_dir / label / "ckpts" / f"{label}_{i}.pt").is_file()]


def find_test_csv(hparams: dict, split_dir=None) -> Path:
    """The development-test split the package carries: ``test.csv`` in the export's ``--split_dir``, else in
    the run's own split folder, else in ``split_setup/``. Where it is missing it is downloaded as the
    training scripts do (into ``--split_dir``, by default ``split_setup/``); without internet the
    DataError names the file, its address and the folder to put it in."""
    dataset_dir = hparams.get("dataset_dir")  # never downloaded into the run's data folder
    if split_dir:
        return split_file(split_dir, "test.csv", dataset_dir)
    for folder in (hparams.get("split_dir"), DEFAULT_SPLIT_DIR):
        if folder and (Path(folder) / "test.csv").is_file():
            return Path(folder) / "test.csv"
    return split_file(DEFAULT_SPLIT_DIR, "test.csv", dataset_dir)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def export_submission(ckpt_id: str, label: str, index: int, out_dir="submissions", project_name="DCASE25_Task1",
                      split_dir=None, overwrite=False, check_limits=True, ckpt_prefix=None) -> Path:
    """Write (or extend) ``<out_dir>/<label>/`` with submission ``index`` of the run ``ckpt_id``; returns
    the package folder. Nothing is written when a check fails."""
    label, index = check_label(label), check_index(index)
    ckpt_path = resolve_checkpoint(str(ckpt_id), project_name)
    # the network is the one the checkpoint records; a stage-1 run exports with every device on the
    # general model
    system, checkpoint, _ = read_device_system(ckpt_path, project_name, prefix=ckpt_prefix)
    hparams = hyper_parameters(checkpoint)
    devices = list(system.device_models)
    config = package_config(network_record(system), hparams, devices)
    # what the package stores and the limits count: 16-bit parameters, or for an 8-bit system the int8
    # model (int8 convolution weights, 16-bit scales and biases)
    store_for_submission(system)
    frontend = build_frontend(config["network"]["name"], config["frontend"])  # the network's own
    complexity = device_models_complexity(system, frontend.input_shape())
    print(complexity_markdown(complexity))
    too_big = over_limits(complexity)
    if too_big and check_limits:
        raise ExportError(f"Not exported: {', '.join(too_big)} exceed the complexity limits "
                          "(30,000,000 MACs, 128,000 parameter bytes per device model).")

    package_dir = Path(out_dir) / label
    others = [i for i in existing_indices(package_dir, label) if i != index]
    if index in existing_indices(package_dir, label) and not overwrite:
        raise ExportError(f"{index_module_path(package_dir, label, index)} exists already: pass --overwrite to "
                          f"replace submission {index}, or choose another --submission_index "
                          f"(taken: {', '.join(map(str, existing_indices(package_dir, label)))}).")

    test_csv = find_test_csv(hparams, split_dir)
    shared = shared_files(label, test_csv)
    changed = [name for name, data in shared.items()
               if (package_dir / name).is_file() and _digest((package_dir / name).read_bytes()) != _digest(data)]
    if changed and others and not overwrite:
        raise ExportError(f"{package_dir}/ holds submissions {', '.join(map(str, others))}, exported with other "
                          f"versions of files they share: {', '.join(changed)}. Re-export them with this "
                          "repository as well, export into another --out_dir, or pass --overwrite to replace "
                          "the shared files anyway.")

    # shared files first, the index's checkpoint and settings next, its module last: a module exists
    # only when everything it needs is in place
    for name, data in shared.items():
        write_bytes(package_dir / name, data)
    ckpt_out = package_dir / label / "ckpts" / f"{label}_{index}.pt"
    with atomic_path(ckpt_out) as tmp:
        torch.save({"state_dict": system.state_dict(), "source_checkpoint": str(ckpt_path)}, tmp)
    write_text(package_dir / label / "ckpts" / f"{label}_{index}.json", json.dumps(config, indent=2) + "\n")
    module = fill((TEMPLATE_DIR / "submission_module.py").read_text(), label, index)
    write_text(index_module_path(package_dir, label, index), module)

    print(f"Exported {ckpt_path} as submission {label}_{index} (devices with their own model: "
          f"{', '.join(devices) or 'none'}; development-test split: {test_csv}).")
    return package_dir
