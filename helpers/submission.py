"""Exporting a trained run as the organisers' 2025 inference package (SPEC section 7).

The package folder ``<out_dir>/<label>/`` holds ``pyproject.toml``, ``test_complexity.py``,
``evaluate_submission.py`` and the package ``<label>/``: one module ``<label>_<index>.py`` per
submission index (from ``submission_template/submission_module.py``), its checkpoint with 16-bit
parameters (int8 convolution weights and 16-bit scales and biases for an 8-bit system) and its
settings in ``ckpts/``, and the code they share: the network, device container
and front end, copied from this project's own modules with their imports made relative, and
``resources/`` (the development-test split, a dummy clip). A new index leaves the others alone.
"""
import argparse
import ast
import dataclasses
import hashlib
import inspect
import io
import json
import re
import wave
from pathlib import Path

import torch

from dataset.dcase25 import CLASSES
from helpers.checkpoints import load_checkpoint, load_device_system, resolve_checkpoint
from helpers.complexity import complexity_markdown, device_models_complexity, over_limits
from helpers.files import atomic_path, write_text
from models.asc_module import store_as_submitted
from models.cp_mobile import NetworkConfig
from models.frontend import LogMelFrontEnd

REPO = Path(__file__).resolve().parents[1]
TEMPLATE_DIR = REPO / "submission_template"
# the organisers' label: <last name>_<institute abbreviation>_task1, e.g. Schmid_CPJKU_task1
LABEL_PATTERN = re.compile(r"^[A-Z][A-Za-z]*_[A-Za-z][A-Za-z0-9]*_task1$")
INDICES = (1, 2, 3, 4)
# project modules the package carries: repository path -> path inside the package
COPIED_MODULES = {
    "models/cp_mobile.py": "models/cp_mobile.py",
    "models/multi_device.py": "models/multi_device.py",
    "models/frontend.py": "models/frontend.py",
    "models/quantization.py": "models/quantization.py",
    "dataset/audio.py": "audio.py",
}
PROJECT_PACKAGES = ("models", "dataset", "helpers", "train_base", "train_device_specific", "scripts")
FRONTEND_KEYS = ("orig_sample_rate", "sample_rate", "window_length", "hop_length", "n_fft", "n_mels", "f_min", "f_max")


class ExportError(RuntimeError):
    """An export that cannot be done as asked; the message says why and what to do."""


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


# --- what goes into the package ---

def package_config(hparams: dict, devices) -> dict:
    """Network and front-end settings of the run (its flags, ``quantize`` among them), the class order and
    the device models."""
    network_fields = [f.name for f in dataclasses.fields(NetworkConfig)]
    network = NetworkConfig(**{k: hparams[k] for k in network_fields if k in hparams}).to_dict()
    defaults = inspect.signature(LogMelFrontEnd.__init__).parameters
    frontend = {k: hparams.get(k, defaults[k].default) for k in FRONTEND_KEYS}
    return {"classes": list(CLASSES), "devices": list(devices), "network": network, "frontend": frontend,
            "quantize": hparams.get("quantize")}


def rewrite_imports(source: str, repo_path: str) -> str:
    """Make a copied module's imports of other copied modules relative to its place in the package;
    refuse one that imports any other part of the project (the package would not carry it)."""
    here = Path(COPIED_MODULES[repo_path]).parent
    by_module = {p[:-3].replace("/", "."): Path(q[:-3]) for p, q in COPIED_MODULES.items()}
    lines = source.splitlines(keepends=True)
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.split(".")[0] in PROJECT_PACKAGES]
            if names:
                raise ExportError(f"{repo_path}: 'import {names[0]}' cannot be exported; use "
                                  "'from <module> import <name>' between the copied modules.")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module.split(".")[0] in PROJECT_PACKAGES:
            target = by_module.get(node.module)
            if target is None:
                raise ExportError(f"{repo_path} imports {node.module}, which the submission package does not "
                                  f"carry (it carries {', '.join(COPIED_MODULES)}). Keep the inference code free "
                                  "of training-only modules.")
            if node.lineno != node.end_lineno:
                raise ExportError(f"{repo_path}:{node.lineno}: write 'from {node.module} import ...' on one line.")
            ups = len(here.parts)
            relative = "." * (ups + 1) + ".".join(target.parts)
            line = lines[node.lineno - 1]
            lines[node.lineno - 1] = line.replace(f"from {node.module} import", f"from {relative} import", 1)
    return "".join(lines)


def fill(template: str, label: str, index: int = None) -> str:
    text = template.replace("__SUBMISSION_LABEL__", label)
    if index is not None:
        text = text.replace("__SUBMISSION_INDEX__", str(index))
    if "__SUBMISSION_" in text:
        raise ExportError("A placeholder of submission_template/ was left unfilled.")
    return text


def dummy_wav() -> bytes:
    """One second of silence, 44.1 kHz, mono, 24-bit PCM: the format of the challenge's clips."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(3)
        out.setframerate(44100)
        out.writeframes(bytes(3 * 44100))
    return buffer.getvalue()


def shared_files(label: str, test_csv) -> dict:
    """Files every index of the package shares: relative path -> bytes."""
    read = lambda name: (TEMPLATE_DIR / name).read_text()  # noqa: E731
    files = {
        "pyproject.toml": fill(read("pyproject.toml"), label),
        "README.md": fill(read("README.md"), label),
        "test_complexity.py": read("test_complexity.py"),
        "evaluate_submission.py": read("evaluate_submission.py"),
        f"{label}/__init__.py": fill(read("package_init.py"), label),
        f"{label}/models/__init__.py": "",
        f"{label}/ckpts/__init__.py": "",
        f"{label}/resources/__init__.py": "",
        f"{label}/resources/dummy.wav": dummy_wav(),
    }
    for repo_path, package_path in COPIED_MODULES.items():
        files[f"{label}/{package_path}"] = rewrite_imports((REPO / repo_path).read_text(), repo_path)
    if test_csv is not None:
        files[f"{label}/resources/test.csv"] = Path(test_csv).read_bytes()
    return {k: v.encode() if isinstance(v, str) else v for k, v in files.items()}


def index_module_path(package_dir: Path, label: str, index: int) -> Path:
    return package_dir / label / f"{label}_{index}.py"


def existing_indices(package_dir: Path, label: str) -> list:
    return [i for i in INDICES if index_module_path(package_dir, label, i).is_file()
            or (package_dir / label / "ckpts" / f"{label}_{i}.pt").is_file()]


def find_test_csv(hparams: dict, split_dir=None):
    """The run's development-test split: ``--split_dir`` of the export, else the run's own."""
    candidates = [split_dir] if split_dir else [hparams.get("split_dir")]
    for folder in candidates:
        if folder and (Path(folder) / "test.csv").is_file():
            return Path(folder) / "test.csv"
    return None


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


# --- the export ---

def export_submission(ckpt_id: str, label: str, index: int, out_dir="submissions", project_name="DCASE25_Task1",
                      split_dir=None, overwrite=False, check_limits=True) -> Path:
    """Write (or extend) ``<out_dir>/<label>/`` with submission ``index`` of the run ``ckpt_id``; returns
    the package folder. Nothing is written when a check fails."""
    label, index = check_label(label), check_index(index)
    ckpt_path = resolve_checkpoint(str(ckpt_id), project_name)
    checkpoint = load_checkpoint(ckpt_path)
    hparams = checkpoint.get("hyper_parameters") or {}
    hparams = dict(vars(hparams)) if isinstance(hparams, argparse.Namespace) else dict(hparams)
    # the network is built from the settings the package will use; a stage-1 run exports with every
    # device on the general model
    network = NetworkConfig(**package_config(hparams, [])["network"])
    system, _, _ = load_device_system(ckpt_path, project_name, network, allow_general=True,
                                      quantize=hparams.get("quantize"))
    devices = list(system.device_models)
    config = package_config(hparams, devices)
    if not devices:
        print(f"Note: {ckpt_path} is a stage-1 checkpoint; every device will use its general model.")
    # what the package stores and the limits count: 16-bit parameters, or for an 8-bit system the int8
    # model (int8 convolution weights, 16-bit scales and biases)
    store_as_submitted(system).half()
    frontend = LogMelFrontEnd(**config["frontend"])
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
          f"{', '.join(devices) or 'none'}; test split: {test_csv or 'not found, evaluate_submission.py will ask'}).")
    return package_dir
