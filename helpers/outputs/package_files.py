"""What the submission package holds besides the index's checkpoint: the files every index shares (the
template's files, the project modules the package carries with their imports made relative, the
development-test split, a dummy clip), the pinned dependencies, and the settings of an index.

The package carries ``models/`` whole (it imports only the standard library, torch, torchaudio and
``models/``, a rule ``tests/test_layers.py`` enforces), so any registered network goes with it, and the
two modules beside it that import no project module: audio decoding and the figures' drawing. Each
file keeps its repository path inside the package, with its imports made relative.
"""
import ast
import inspect
import io
import json
import re
import sys
import wave
from pathlib import Path

from dataset.dcase25 import CLASSES
from helpers.base.errors import UserError
from models.frontend import LogMelFrontEnd

REPO = Path(__file__).resolve().parents[2]
TEMPLATE_DIR = REPO / "submission_template"
REQUIREMENTS = REPO / "requirements.txt"
# torchaudio's compiled extension loads only with the torch it was built for: the two go together
MATCHED_PAIR = ("torch", "torchaudio")
# top-level names of this project's modules and packages: an import of one of them is a project import
PROJECT_NAMES = frozenset([p.stem for p in REPO.glob("*.py")] +
                          [p.name for p in REPO.iterdir() if p.is_dir() and any(p.glob("*.py"))])
CARRIED_PACKAGE = "models"  # carried whole: what a submission needs
CARRIED_MODULES = ("dataset/audio.py", "helpers/outputs/drawing.py")  # import no project module


class ExportError(UserError):
    """An export that cannot be done as asked; the message says why and what to do."""


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
