"""Exporting a trained run as the organisers' 2025 inference package (SPEC section 7).

The package folder ``<out_dir>/<label>/`` holds ``pyproject.toml``, ``test_complexity.py``,
``evaluate_submission.py`` and the package ``<label>/``: one module ``<label>_<index>.py`` per
submission index (from ``submission_template/submission_module.py``), its checkpoint with 16-bit
parameters (int8 convolution weights and 16-bit scales and biases for an 8-bit system) and its settings
in ``ckpts/``, the project code they run, and ``resources/`` (the development-test split, a dummy clip).
A new index leaves the others alone.

The package carries ``models/`` whole (it imports only the standard library, torch, torchaudio and
``models/``, a rule ``tests/test_layers.py`` enforces), so any registered network goes with it, and the
two modules beside it that import no project module: audio decoding and the figures' drawing. Each
file keeps its repository path inside the package, with its imports made relative.
"""
import ast
import hashlib
import inspect
import io
import json
import re
import sys
import wave
from pathlib import Path

import torch

from dataset.dcase25 import CLASSES, split_file
from helpers.base.errors import UserError
from helpers.files import atomic_path, write_text
from helpers.outputs.complexity import complexity_markdown, device_models_complexity, over_limits
from helpers.setup.checkpoints import hyper_parameters, resolve_checkpoint
from helpers.setup.model_loader import read_device_system
from models.frontend import LogMelFrontEnd
from models.inference import store_for_submission
from models.registry import build_frontend, network_record

REPO = Path(__file__).resolve().parents[2]
TEMPLATE_DIR = REPO / "submission_template"
REQUIREMENTS = REPO / "requirements.txt"
# torchaudio's compiled extension loads only with the torch it was built for: the two go together
MATCHED_PAIR = ("torch", "torchaudio")
# the organisers' label: <last name>_<institute abbreviation>_task1, e.g. Schmid_CPJKU_task1
LABEL_PATTERN = re.compile(r"^[A-Z][A-Za-z]*_[A-Za-z][A-Za-z0-9]*_task1$")
INDICES = (1, 2, 3, 4)
# top-level names of this project's modules and packages: an import of one of them is a project import
PROJECT_NAMES = frozenset([p.stem for p in REPO.glob("*.py")] +
                          [p.name for p in REPO.iterdir() if p.is_dir() and any(p.glob("*.py"))])
DEFAULT_SPLIT_DIR = "split_setup"  # the training scripts' default --split_dir
CARRIED_PACKAGE = "models"  # carried whole: what a submission needs
CARRIED_MODULES = ("dataset/audio.py", "helpers/outputs/drawing.py")  # import no project module


class ExportError(UserError):
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

def package_config(network: dict, hparams: dict, devices) -> dict:
    """The network (name, config and, for an 8-bit system, ``quantize``), the front-end settings of the
    run (its flags, else the front end's defaults), the class order and the device models."""
    parameters = list(inspect.signature(LogMelFrontEnd.__init__).parameters.values())[1:]
    frontend = {p.name: hparams.get(p.name, p.default) for p in parameters}
    return {"classes": list(CLASSES), "devices": list(devices), "network": network, "frontend": frontend}


def module_path(module: str) -> str:
    """``models.cp_mobile`` -> ``models/cp_mobile.py``."""
    return module.replace(".", "/") + ".py"


def project_imports(repo_path: str) -> list:
    """The project modules that ``repo_path`` imports; refuses the forms the package cannot rewrite."""
    found = []
    for node in ast.walk(ast.parse((REPO / repo_path).read_text(), filename=repo_path)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.split(".")[0] in PROJECT_NAMES]
            if names:
                raise ExportError(f"{repo_path}: 'import {names[0]}' cannot be exported; use "
                                  "'from <module> import <name>' between the exported modules.")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module.split(".")[0] in PROJECT_NAMES:
            if node.lineno != node.end_lineno:
                raise ExportError(f"{repo_path}:{node.lineno}: write 'from {node.module} import ...' on one line.")
            found.append(node.module)
    return found


def carried_modules() -> list:
    """Repository paths of what the package carries: every module of ``models/`` and ``CARRIED_MODULES``.
    Refuses (ExportError) when one of them imports a project module the package does not carry."""
    paths = sorted(p.relative_to(REPO).as_posix() for p in (REPO / CARRIED_PACKAGE).rglob("*.py")
                   if "__pycache__" not in p.parts) + list(CARRIED_MODULES)
    for path in paths:
        outside = [m for m in project_imports(path) if module_path(m) not in paths]
        if outside:
            raise ExportError(f"{path} imports {outside[0]}, which the submission package does not carry: "
                              f"{CARRIED_PACKAGE}/ may import only the standard library, torch, torchaudio and "
                              f"{CARRIED_PACKAGE}/ itself.")
    return paths


def rewrite_imports(source: str, repo_path: str) -> str:
    """Make a copied module's imports of other project modules relative to its place in the package
    (the same path as in the repository)."""
    lines = source.splitlines(keepends=True)
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module.split(".")[0] in PROJECT_NAMES:
            relative = "." * len(Path(repo_path).parts) + node.module
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


def module_level_imports(tree: ast.Module) -> list:
    """The import statements that run when a module is imported: not those inside functions (a teacher
    network imports its own package only when it is built)."""
    found, todo = [], list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            todo += [child for child in ast.iter_child_nodes(node) if isinstance(child, ast.stmt)]
    return found


def imported_modules(files: dict) -> set:
    """Top-level names of the modules that importing the Python files among ``files`` imports (not relative
    imports, not imports inside functions)."""
    names = set()
    for path, text in files.items():
        if not path.endswith(".py"):
            continue
        for node in module_level_imports(ast.parse(text)):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif node.level == 0:
                names.add(node.module.split(".")[0])
    return names


def package_dependencies(files: dict, label: str) -> list:
    """The lines of requirements.txt for every third-party module the package's files import: the
    runtime the package needs, pinned as in the training environment."""
    requirements = {}
    for line in REQUIREMENTS.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            requirements[re.split(r"[<>=!~\[;\s]", line, maxsplit=1)[0].lower()] = line
    own = {label} | {Path(p).stem for p in files if p.endswith(".py")}
    needed = {m for m in imported_modules(files) if m not in sys.stdlib_module_names and m not in own}
    if needed & set(MATCHED_PAIR):
        needed |= set(MATCHED_PAIR)
    unlisted = sorted(needed - requirements.keys())
    if unlisted:
        raise ExportError(f"The package imports {', '.join(unlisted)}, which {REQUIREMENTS.name} does not list: add "
                          "it there, so that the package can pin the version it was exported with.")
    return [requirements[m] for m in sorted(needed)]


def shared_files(label: str, test_csv) -> dict:
    """Files every index of the package shares: relative path -> bytes."""
    read = lambda name: (TEMPLATE_DIR / name).read_text()  # noqa: E731
    files = {
        "README.md": fill(read("README.md"), label),
        "build_backend.py": read("build_backend.py"),
        "test_complexity.py": read("test_complexity.py"),
        "evaluate_submission.py": read("evaluate_submission.py"),
        f"{label}/__init__.py": fill(read("package_init.py"), label),
        f"{label}/ckpts/__init__.py": "",
        f"{label}/resources/__init__.py": "",
        f"{label}/resources/dummy.wav": dummy_wav(),
    }
    for repo_path in carried_modules():
        files[f"{label}/{repo_path}"] = rewrite_imports((REPO / repo_path).read_text(), repo_path)
        for folder in Path(repo_path).parents[:-1]:  # the package's own (empty) __init__.py files
            files.setdefault(f"{label}/{folder.as_posix()}/__init__.py", "")
    # what the installed package runs: these files and the index modules (all made from one template)
    runtime = {**files, "submission_module.py": read("submission_module.py")}
    del runtime["build_backend.py"]  # runs only while pip builds, under build-system.requires
    dependencies = json.dumps(package_dependencies(runtime, label))
    files["pyproject.toml"] = fill(read("pyproject.toml").replace("__SUBMISSION_DEPENDENCIES__", dependencies), label)
    files[f"{label}/resources/test.csv"] = Path(test_csv).read_bytes()
    return {k: v.encode() if isinstance(v, str) else v for k, v in files.items()}


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


# --- the export ---

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
