"""docs/flags.md is written from the parsers (python -m helpers.setup.flags docs/flags.md) and kept current."""
import subprocess
import sys
from pathlib import Path

from helpers.setup import defaults, flags, flags_page

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / flags_page.FLAGS_PAGE


def test_the_flags_page_is_the_one_the_parsers_write():
    assert PAGE.read_text() == flags_page.flags_markdown(flags.script_parsers()), (
        f"{flags_page.FLAGS_PAGE} is stale: write it again with python -m helpers.setup.flags "
        f"{flags_page.FLAGS_PAGE}")


def test_the_page_lists_every_flag_with_each_scripts_default(monkeypatch):
    page = flags_page.flags_markdown(flags.script_parsers())
    for parser in (flags.stage1_parser(""), flags.stage2_parser("")):
        for action in parser._actions:
            if action.option_strings and action.dest != "help":
                assert f"| `{action.option_strings[0]}` |" in page, action.option_strings[0]
    assert "| `--lr` | `0.005` | `0.0005` |" in page  # the organisers' two defaults
    # a changed default changes the page, so a stale page fails the test above
    monkeypatch.setitem(defaults.STAGE_DEFAULTS["base"], "lr", 0.001)
    assert "| `--lr` | `0.001` | `0.0005` |" in flags_page.flags_markdown(flags.script_parsers())


def test_the_documented_command_writes_the_page(tmp_path):
    """``python -m helpers.setup.flags FILE``, the command the page and the docs name, writes the page."""
    out = tmp_path / "flags.md"
    subprocess.run([sys.executable, "-m", "helpers.setup.flags", str(out)], cwd=REPO, check=True)
    assert out.read_text() == PAGE.read_text()
