"""The import rules of the repository, read from every module's source (nothing is imported):

- ``models/`` is what a submission carries: at module level it imports only the standard library, torch,
  torchaudio and ``models/`` (the exported package copies the folder whole, relying on this); a teacher
  network may import its own package inside the function that builds it (PaSST: hear21passt), which the
  package never calls;
- ``helpers/base/`` (the user errors, the parser) sits below everything: it imports only the standard library
  and itself;
- ``dataset/`` imports nothing from ``models/`` or ``helpers/`` but ``helpers/base/``;
- ``helpers/`` is layered (below): a module imports only modules of its own layer or of layers before it;
- no project module imports a top-level script, and no import cycle exists.

``python tests/test_layers.py`` prints the layers with their modules and any violation.
"""
import ast
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = ("train_base", "train_device_specific", "export_submission")
# in order: a module may import from its own layer and from the layers before it
LAYERS = (
    ("helpers.base",),  # what every layer may import: the user errors, the parser (the standard library only)
    ("models", "dataset"),  # the two foundations, each importing only itself (and dataset helpers.base; below)
    ("helpers", "helpers.files"),  # the package itself; writing files safely
    ("helpers.training",),  # the training step: module, augmentation, losses, metrics, teacher file
    ("helpers.setup",),  # run set-up: flags, run ids, data, loggers, trainer, checkpoints
    ("helpers.outputs",),  # results, figures, comparison, complexity, predictions, the package
    ("helpers.stage", "helpers.compare_runs", "helpers.complexity_table", "helpers.figures",
     "helpers.write_teacher_logits"),  # the commands
    SCRIPTS,
)
# the project modules these may import (and no others)
OWN_ONLY = {"models": ("models",), "dataset": ("dataset", "helpers.base"), "helpers.base": ("helpers.base",)}
MODELS_MAY_IMPORT = {"torch", "torchaudio", "models"}
PACKAGES = ("models", "dataset", "helpers")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict:
    """``{module name: path}`` of the packages and the top-level scripts."""
    paths = [p for package in PACKAGES for p in (REPO / package).rglob("*.py") if "__pycache__" not in p.parts]
    paths += [REPO / f"{script}.py" for script in SCRIPTS]
    return {module_name(p): p for p in sorted(paths)}


def inside_functions(tree: ast.Module) -> set:
    """The import statements of ``tree`` that sit inside a function (run only when it is called)."""
    return {id(node) for function in ast.walk(tree) if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef))
            for node in ast.walk(function) if isinstance(node, (ast.Import, ast.ImportFrom))}


def imports(path: Path, modules: dict) -> list:
    """``(line, imported name, inside a function)`` of every import in the file; project imports are resolved
    to the module they name (``from helpers.setup import flags`` -> ``helpers.setup.flags``)."""
    found = []
    tree = ast.parse(path.read_text(), filename=str(path))
    deferred = inside_functions(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, id(node) in deferred) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative imports do not occur in the project
                found.append((node.lineno, "." * node.level + (node.module or ""), id(node) in deferred))
                continue
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.append((node.lineno, candidate if candidate in modules else node.module, id(node) in deferred))
    return found


def layer_of(module: str) -> int:
    """The layer whose entry is the longest prefix of ``module`` (``helpers.setup.flags``: ``helpers.setup``)."""
    matches = [(len(prefix), index) for index, layer in enumerate(LAYERS) for prefix in layer
               if module == prefix or module.startswith(prefix + ".")]
    if not matches:
        raise LookupError(f"{module} is in no layer of tests/test_layers.py: add it to LAYERS")
    return max(matches)[1]


def package_of(module: str) -> str:
    return module.split(".")[0]


def within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def own_only_rule(module: str):
    """The part of ``OWN_ONLY`` that ``module`` belongs to (the longest prefix), or None."""
    matches = [prefix for prefix in OWN_ONLY if within(module, prefix)]
    return max(matches, key=len) if matches else None


def shown_path(module: str) -> str:
    return module.replace(".", "/") + "/"


def violations() -> list:
    """One line per broken rule: ``file:line: what is wrong``."""
    modules = project_modules()
    found, graph = [], {}
    for module, path in modules.items():
        where = path.relative_to(REPO)
        graph[module] = set()
        for line, name, deferred in imports(path, modules):
            top = name.split(".")[0]
            if name.startswith("."):
                found.append(f"{where}:{line}: relative import {name}; write the absolute module path")
                continue
            third_party = top not in PACKAGES + SCRIPTS
            if (package_of(module) == "models" and top not in MODELS_MAY_IMPORT and top not in sys.stdlib_module_names
                    and not (deferred and third_party)):
                found.append(f"{where}:{line}: imports {name}; models/ may import only the standard library, torch, "
                             "torchaudio and models/ (it is what a submission carries)")
            if own_only_rule(module) == "helpers.base" and third_party and top not in sys.stdlib_module_names:
                found.append(f"{where}:{line}: imports {name}; helpers/base/ imports only the standard library and "
                             "itself (every layer imports it)")
            if top not in PACKAGES + SCRIPTS:
                continue
            if name not in modules:
                found.append(f"{where}:{line}: imports {name}, which is not a module of the project")
                continue
            graph[module].add(name)
            if top in SCRIPTS:
                found.append(f"{where}:{line}: imports the script {name}; move what it needs into a module")
            elif (rule := own_only_rule(module)) and not any(within(name, allowed) for allowed in OWN_ONLY[rule]):
                allowed = " and ".join(["itself"] + [shown_path(a) for a in OWN_ONLY[rule][1:]])
                found.append(f"{where}:{line}: imports {name}; {shown_path(rule)} imports only {allowed}")
            elif layer_of(name) > layer_of(module):
                found.append(f"{where}:{line}: imports {name} (layer {layer_of(name)}, {LAYERS[layer_of(name)][0]}) "
                             f"from layer {layer_of(module)} ({LAYERS[layer_of(module)][0]}): nothing imports upward")
    found += [f"import cycle: {' -> '.join(cycle)}" for cycle in cycles(graph)]
    return found


def cycles(graph: dict) -> list:
    """Each import cycle of ``graph`` (module -> imported modules) once, as the modules along it."""
    found, state, stack = [], {}, []

    def visit(module):
        state[module] = "open"
        stack.append(module)
        for name in sorted(graph.get(module, ())):
            if state.get(name) == "open":
                cycle = stack[stack.index(name):] + [name]
                if not any(set(cycle) == set(known) for known in found):
                    found.append(cycle)
            elif name not in state:
                visit(name)
        stack.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module)
    return found


def test_every_module_keeps_to_its_layer_and_there_is_no_cycle():
    problems = violations()
    assert not problems, "Import rules broken (see tests/test_layers.py):\n" + "\n".join(problems)


def test_every_module_is_in_a_layer():
    for module in project_modules():
        layer_of(module)  # raises for a module outside every layer


def test_the_readme_layout_names_every_module():
    """README's layout has a line for each module (packages' ``__init__`` files aside)."""
    readme = (REPO / "README.md").read_text()
    unnamed = [str(path.relative_to(REPO)) for path in project_modules().values()
               if path.name != "__init__.py" and f"`{path.relative_to(REPO)}`" not in readme]
    assert not unnamed, f"README.md's layout lacks {unnamed}"


MAX_LINES = 300
OVER_MAX_LINES_FOR_NOW = set()


def test_no_module_is_over_300_lines():
    """Every Python module of the project (benchmarks, scripts and the submission template included, tests
    excepted) stays within ``MAX_LINES``: past that a module holds more than one job."""
    paths = [p for folder in (*PACKAGES, "benchmarks", "scripts", "submission_template")
             for p in (REPO / folder).rglob("*.py") if "__pycache__" not in p.parts]
    paths += [REPO / f"{script}.py" for script in SCRIPTS]
    long = {str(p.relative_to(REPO)): len(p.read_text().splitlines()) for p in paths}
    over = {path: n for path, n in long.items() if n > MAX_LINES and path not in OVER_MAX_LINES_FOR_NOW}
    assert not over, f"Modules over {MAX_LINES} lines (split them by job): {over}"


def test_the_rules_catch_what_they_forbid(tmp_path, monkeypatch):
    """A model importing helpers/, dataset/ importing models/, an upward import and a cycle are each found."""
    for package in PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "helpers" / "training").mkdir()
    (tmp_path / "helpers" / "setup").mkdir()
    (tmp_path / "helpers" / "base").mkdir()
    (tmp_path / "helpers" / "base" / "errors.py").write_text("import argparse\nimport numpy\n"
                                                             "from helpers.files import x\n")
    for script in SCRIPTS:
        (tmp_path / f"{script}.py").write_text("")
    (tmp_path / "models" / "net.py").write_text("import torch\nfrom helpers.files import atomic_path\nimport timm\n"
                                                "def build():\n    import hear21passt\n")
    (tmp_path / "dataset" / "data.py").write_text("import pandas\nfrom models.net import x\n"
                                                  "from helpers.base.errors import e\n")
    (tmp_path / "helpers" / "files.py").write_text("")
    (tmp_path / "helpers" / "training" / "step.py").write_text("from helpers.setup.flags import x\n")
    (tmp_path / "helpers" / "setup" / "flags.py").write_text("from helpers.setup.runs import y\n")
    (tmp_path / "helpers" / "setup" / "runs.py").write_text("import train_base\nfrom helpers.setup.flags import z\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    problems = "\n".join(violations())
    assert "models/net.py:2: imports helpers.files; models/ may import only" in problems
    assert "models/net.py:3: imports timm" in problems  # at module level: the package would need it
    assert "hear21passt" not in problems  # inside a function: only when a teacher is built
    assert "dataset/data.py:2: imports models.net; dataset/ imports only itself and helpers/base/" in problems
    assert "dataset/data.py:3" not in problems  # the base layer is below dataset/
    assert "helpers/base/errors.py:2: imports numpy; helpers/base/ imports only the standard library" in problems
    assert "helpers/base/errors.py:3: imports helpers.files; helpers/base/ imports only itself" in problems
    assert "errors.py:1" not in problems
    assert "helpers/training/step.py:1: imports helpers.setup.flags (layer 4" in problems
    assert "helpers/setup/runs.py:1: imports the script train_base" in problems
    assert "import cycle: helpers.setup.flags -> helpers.setup.runs -> helpers.setup.flags" in problems
    assert "imports pandas" not in problems and "imports torch" not in problems


if __name__ == "__main__":
    for index, layer in enumerate(LAYERS):
        members = [m for m in project_modules() if layer_of(m) == index]
        print(f"layer {index}: {', '.join(layer)} ({len(members)} modules)")
    problems = violations()
    print("\n".join(problems) if problems else "no violation")
    sys.exit(1 if problems else 0)
