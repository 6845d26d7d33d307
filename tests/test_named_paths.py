"""Every project path that a doc, a docstring or a comment names exists: ``helpers/setup/flags.py``,
``docs/speed.md``, ``dataset/demo/``. A path counts when it starts with a source folder of the repository
and ends in a file extension or a slash; the strings code builds (a test's made-up repository) are not
read, only docstrings and comments."""
import ast
import io
import re
import tokenize
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCE_FOLDERS = ("models", "dataset", "helpers", "tests", "benchmarks", "scripts", "docs", "submission_template")
WRITTEN_BY_THE_READER = {"models/tiny_cnn.py"}  # docs/networks.md's example of a new network
# a path: a source folder at its start (not inside another path: <label>/models/...), then its parts
PATH = re.compile(r"(?<![\w./<>~$-])((?:" + "|".join(SOURCE_FOLDERS) + r")/[\w./-]*)")


def scanned_files() -> list:
    files = [p for p in REPO.glob("*") if p.suffix in (".py", ".md")]
    files += [p for folder in SOURCE_FOLDERS for p in (REPO / folder).rglob("*")
              if p.suffix in (".py", ".md") and "__pycache__" not in p.parts]
    return sorted(files)


def prose_of_python(source: str) -> list:
    """``(line, text)`` of the docstrings and comments of a module."""
    found = [(token.start[0], token.string) for token in tokenize.generate_tokens(io.StringIO(source).readline)
             if token.type == tokenize.COMMENT]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            docstring = ast.get_docstring(node, clean=False)
            if docstring:
                found.append((node.body[0].lineno, docstring))
    return found


def named_paths(text: str) -> list:
    """The project paths ``text`` names: those ending in a file extension or a slash."""
    paths = [match.rstrip(".,:;") for match in PATH.findall(text)]
    return [p for p in paths if p.endswith("/") or re.search(r"\.\w+$", p)]


def missing_paths(files=None) -> list:
    """``file:line: path`` for every named path that does not exist."""
    missing = []
    for path in files or scanned_files():
        text = path.read_text()
        pieces = prose_of_python(text) if path.suffix == ".py" else [(1, text)]
        for line, piece in pieces:
            for named in named_paths(piece):
                if not (REPO / named).exists() and named not in WRITTEN_BY_THE_READER:
                    shown = path.relative_to(REPO) if REPO in path.parents else path.name
                    missing.append(f"{shown}:{line}: {named}")
    return missing


def test_every_path_named_in_docs_docstrings_and_comments_exists():
    missing = missing_paths()
    assert not missing, "Named paths that do not exist:\n" + "\n".join(missing)


def test_the_scan_finds_a_missing_path_and_leaves_code_and_outputs_alone(tmp_path):
    module = tmp_path / "module.py"
    module.write_text('"""Reads helpers/cli.py and models/registry.py."""\n'
                      'X = "helpers/not_read.py"  # see models/augmentation.py\n'
                      '# writes predictions/<run id>/ and <label>/models/cp_mobile.py, like dataset/demo/\n')
    page = tmp_path / "page.md"
    page.write_text("See `docs/nowhere.md`, [speed](docs/speed.md) and `helpers/setup/flags.py:12`.\n")
    missing = [line.split(": ", 1)[1] for line in missing_paths([module, page])]
    assert sorted(missing) == ["docs/nowhere.md", "helpers/cli.py", "models/augmentation.py"]
