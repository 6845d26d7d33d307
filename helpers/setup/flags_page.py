"""docs/flags.md, written from the parsers of both training scripts (``python -m helpers.setup.flags
docs/flags.md`` gives them)."""
import argparse
from pathlib import Path

from helpers.base.command_line import StrictParser
from helpers.files import write_text
from helpers.setup.defaults import DEMO_DEFAULTS

FLAGS_PAGE = Path("docs") / "flags.md"


def _default_cell(action, parser) -> str:
    default = parser.get_default(action.dest)
    if default is argparse.SUPPRESS:
        return "the network's" if action.dest != "model" else "the checkpoint's"
    if default is None or default is False:
        return "-"
    if default is True:
        return "on"
    return "`" + (" ".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)) + "`"


def flags_markdown(scripts: dict) -> str:
    """The page of every flag of the training scripts ``{script: parser}``, by group, with each script's
    default."""
    groups = {}  # group title -> flag -> {"help": text, script: default cell}
    for script, parser in scripts.items():
        for group in parser._action_groups:
            for action in group._group_actions:
                if not action.option_strings or action.dest == "help":
                    continue
                entry = groups.setdefault(group.title, {}).setdefault(action.option_strings[0],
                                                                      {"help": action.help or ""})
                entry[script] = _default_cell(action, parser)
    lines = ["# Flags", "",
             f"<!-- written by `python -m helpers.setup.flags {FLAGS_PAGE}`; tests/test_flags_page.py fails when "
             "it is stale -->", "",
             "Every flag of the two training scripts with its default in each (`-`: none, the flag is off or "
             "unset). The organisers' flags keep their names and defaults; flags must be written in full. "
             "`--help` of a script lists the same.", ""]
    for title, flags in groups.items():
        lines += [f"## {title}", "", "| flag | train_base.py | train_device_specific.py | meaning |",
                  "|---|---|---|---|"]
        for flag, entry in flags.items():
            cells = [entry.get(script, "(not a flag)") for script in scripts]
            meaning = entry["help"].replace("|", "\\|").replace("%%", "%")
            lines.append(f"| `{flag}` | {cells[0]} | {cells[1]} | {meaning} |")
        lines.append("")
    lines += ["## What `--demo` changes", "",
              "With `--demo` these defaults replace the ones above (flags given on the command line still win):", "",
              "| flag | train_base.py | train_device_specific.py |", "|---|---|---|"]
    for flag in dict.fromkeys([*DEMO_DEFAULTS["base"], *DEMO_DEFAULTS["device"]]):
        cells = [f"`{DEMO_DEFAULTS[stage][flag]}`" if flag in DEMO_DEFAULTS[stage] else "-"
                 for stage in ("base", "device")]
        lines.append(f"| `--{flag}` | {cells[0]} | {cells[1]} |")
    return "\n".join(lines) + "\n"


def main(scripts: dict, argv=None):
    """Print the page of ``scripts`` (``{script: parser}``) or write it to the file that ``argv`` names."""
    parser = StrictParser(description="Write the flags page from the parsers:\n\n"
                                      f"    python -m helpers.setup.flags {FLAGS_PAGE}\n")
    parser.add_argument("out", nargs="?", default=None, help="the file to write (default: print the page)")
    args = parser.parse_args(argv)
    page = flags_markdown(scripts)
    if args.out is None:
        print(page, end="")
    else:
        write_text(args.out, page)
