"""docs/flags.md is written from the parsers (python -m helpers.setup.flags docs/flags.md) and kept current."""
from pathlib import Path

from helpers.setup import flags

PAGE = Path(__file__).resolve().parents[1] / flags.FLAGS_PAGE


def test_the_flags_page_is_the_one_the_parsers_write():
    assert PAGE.read_text() == flags.flags_markdown(), (
        f"{flags.FLAGS_PAGE} is stale: write it again with python -m helpers.setup.flags {flags.FLAGS_PAGE}")


def test_the_page_lists_every_flag_with_each_scripts_default(monkeypatch):
    page = flags.flags_markdown()
    for parser in (flags.stage1_parser(""), flags.stage2_parser("")):
        for action in parser._actions:
            if action.option_strings and action.dest != "help":
                assert f"| `{action.option_strings[0]}` |" in page, action.option_strings[0]
    assert "| `--lr` | `0.005` | `0.0005` |" in page  # the organisers' two defaults
    # a changed default changes the page, so a stale page fails the test above
    monkeypatch.setitem(flags.STAGE_DEFAULTS["base"], "lr", 0.001)
    assert "| `--lr` | `0.001` | `0.0005` |" in flags.flags_markdown()
