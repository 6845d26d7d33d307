"""``python -m dataset.check --dataset_dir DIR``: is a data folder complete?

Every clip that ``meta.csv`` and the split files name (or, in an evaluation set, that
``evaluation_setup/fold1_test.csv`` names) must be present with a readable wav header; the totals are
compared with the published ones. What is missing is listed, the first few and the count, with the
archive each clip comes from where the download command recorded it. A folder complete for its own
``meta.csv`` but smaller than the published set (the demo set, a subset) passes, and says so.
"""
import sys
from pathlib import Path

from dataset import audio_checks, validation
from dataset.dcase25 import read_meta
from dataset.sources import EVALUATION, ONLY_SPLIT_FILES, PUBLISHED_TOTALS
from dataset.unpack import all_records
from helpers.base.command_line import StrictParser
from helpers.base.errors import DataError

SAMPLE_RATE = 44_100  # of the published clips


def check_folder(dataset_dir, split_dir="split_setup", only_split=None) -> list:
    """The lines that describe a complete folder; a DataError that lists what is missing otherwise."""
    dataset_dir = Path(dataset_dir)
    if not (dataset_dir / "meta.csv").is_file():
        if (dataset_dir / EVALUATION.table).is_file():
            return _check_evaluation(dataset_dir)
        raise DataError(f"{dataset_dir} holds neither meta.csv (a development set) nor {EVALUATION.table} (an "
                        "evaluation set): pass the folder that holds them, the one the archives unpack into.")
    meta = read_meta(dataset_dir)
    splits = _read_splits(dataset_dir, Path(split_dir), meta)
    if only_split:
        missing = [name for name in ONLY_SPLIT_FILES if name not in splits]
        if missing:
            raise DataError(f"--only_split {only_split} checks the clips of {' and '.join(ONLY_SPLIT_FILES)}, but "
                            f"{', '.join(missing)} is in neither {split_dir}/ nor {dataset_dir / 'split_setup'}/: "
                            "pass --split_dir to the folder that holds it.")
        names = [name for split in splits.values() for name in split["filename"]]
    else:
        names = list(meta["filename"])
    report = audio_checks.scan_audio(dataset_dir, names, SAMPLE_RATE)
    _refuse_missing(report, dataset_dir, only_split)
    lines = [f"All {report.scanned:,} clips {_named_by(splits, only_split)} are present in {dataset_dir} with a "
             "readable header."]
    lines += report.notes()
    if only_split:
        lines.append(f"--only_split {only_split}: the other {len(meta) - report.scanned:,} clips of meta.csv were "
                     "not checked (the training scripts use only these splits).")
    counts = {"meta.csv": len(meta), **{name: len(split) for name, split in splits.items()}}
    if all(counts.get(name) == total for name, total in PUBLISHED_TOTALS.items()):
        lines.append(f"This is the development set as published: {_totals(counts)}.")
    else:
        lines.append(f"Not the full published set ({_totals(counts)}): complete for its own meta.csv, which is fine "
                     "for the demo set or a subset.")
    if len(splits) < len(ONLY_SPLIT_FILES):
        lines.append(f"{', '.join(n for n in ONLY_SPLIT_FILES if n not in splits)} not found in {split_dir}/: the "
                     "training scripts download the split files the first time.")
    return lines


def _read_splits(dataset_dir: Path, split_dir: Path, meta) -> dict:
    """The split files present in ``split_dir`` (or, as in the demo set, in ``<dataset_dir>/split_setup``),
    each checked against ``meta.csv``."""
    splits = {}
    for name in ONLY_SPLIT_FILES:
        for folder in (split_dir, dataset_dir / "split_setup"):
            if (folder / name).is_file():
                split = validation.read_table(folder / name)
                validation.check_split(split, folder / name, meta["filename"], dataset_dir / "meta.csv")
                splits[name] = split
                break
    return splits


def _check_evaluation(dataset_dir: Path) -> list:
    path = dataset_dir / EVALUATION.table
    table = validation.read_table(path)
    device = "device_id" if "device_id" in table.columns else "source_label"
    validation.check_columns(table, path, ("filename", device))
    validation.check_evaluation_table(table, path, device)
    report = audio_checks.scan_audio(dataset_dir, table["filename"], SAMPLE_RATE)
    _refuse_missing(report, dataset_dir, None)
    return [f"All {report.scanned:,} clips of {EVALUATION.table} are present in {dataset_dir} with a readable "
            "header.", *report.notes(),
            "The published size of the 2025 evaluation set is not recorded in this project: compare the count "
            f"with its record (DOI {EVALUATION.doi})."]


def _named_by(splits, only_split) -> str:
    return f"of {' and '.join(splits)}" if only_split else "that meta.csv names"


def _totals(counts: dict) -> str:
    return "; ".join(f"{name} {counts[name]:,}" + ("" if counts[name] == total else f" of {total:,}")
                     for name, total in PUBLISHED_TOTALS.items() if name in counts)


def _refuse_missing(report, dataset_dir: Path, only_split) -> None:
    """One DataError naming the first missing or broken clips, their count and their archives."""
    if not report.broken:
        return
    origin, split_of = archive_of_clips(dataset_dir)
    shown = "\n".join(f"  {name}: {why}" + (f" (from {origin[name]})" if name in origin else "")
                      for name, why in report.broken[:validation.SHOWN])
    more = f"\n  and {len(report.broken) - validation.SHOWN:,} more" if len(report.broken) > validation.SHOWN else ""
    archives = sorted({origin[name] for name, _ in report.broken if name in origin})
    if archives:
        shown += (f"\nThey come from {len(archives)} archive{'s' if len(archives) > 1 else ''}: "
                  f"{', '.join(archives[:8])}{' ...' if len(archives) > 8 else ''}. Run the download command again "
                  f"(python -m dataset.download ... --dir {dataset_dir.parent}): it unpacks those archives again.")
    elif split_of and not only_split:
        shown += (f"\nThis folder was unpacked with --only_split {split_of}: check it with --only_split {split_of}, "
                  "or download again without it for every clip.")
    else:
        shown += "\nRestore them from the original archives, or remove their lines from meta.csv and the split files."
    raise DataError(f"{len(report.broken):,} of {report.scanned:,} clips are missing or unreadable in "
                    f"{dataset_dir}:\n{shown}{more}")


def archive_of_clips(dataset_dir: Path) -> tuple:
    """``({clip name as meta.csv writes it: archive}, split)`` from the download command's records beside
    ``dataset_dir`` (empty where it made none); ``split`` is the ``--only_split`` it unpacked with, if any."""
    origin, split = {}, None
    root = dataset_dir.resolve()
    for folder, prefix in ((root.parent, f"{root.name}/"), (root, "")):  # the zip's top folder, or none
        for record in all_records(folder):
            split = split or record.get("only_split")
            origin.update({member[len(prefix):]: record["archive"] for member in record["files"]
                           if member.startswith(prefix) and member.startswith("audio/", len(prefix))})
    return origin, split


def main(argv=None) -> None:
    parser = StrictParser(prog="python -m dataset.check", description=__doc__.split("\n\n")[0].replace("``", ""))
    parser.add_argument("--dataset_dir", required=True,
                        help="the folder with meta.csv and audio/ (or an evaluation set: audio/ and evaluation_setup/)")
    parser.add_argument("--split_dir", default="split_setup",
                        help="where split25.csv and test.csv are (also looked for in DATASET_DIR/split_setup)")
    parser.add_argument("--only_split", type=int, choices=[25], default=None,
                        help="check only the clips of split25.csv and test.csv (a folder downloaded with "
                             "--only_split 25)")
    args = parser.parse_args(argv)
    try:
        for line in check_folder(args.dataset_dir, args.split_dir, args.only_split):
            print(line)
    except DataError as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
