"""``python -m dataset.download {development,evaluation,all} --dir DIR``: download, check and unpack the
published data sets into DIR, in the layout the scripts read.

Per archive: download (or take the copy already in DIR), check its MD5 against the record's listing
and, for the development set, against the published checksums; unpack it, check its files, and delete
it (unless ``--keep_archives``). Run again after an interruption, it keeps what is done and fetches the
rest. Afterwards the clips are counted against ``meta.csv`` and the published totals, and the command
prints the ``export DCASE25_DATASET_DIR=...`` line and the next command.
"""
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import pooch

from dataset.check import check_folder
from dataset.dcase25 import DATASET_DIR_ENV, SPLIT_URL, split_file
from dataset.fetch import Bars, fetch_archive, fetch_listing, say
from dataset.sources import (
    DEVELOPMENT,
    ONLY_SPLIT_FILES,
    PUBLISHED_TOTALS,
    RECORDS,
    ZENODO,
    Record,
    listing_url,
    parse_listing,
    published_archives,
)
from dataset.unpack import STATE, free_bytes, gb, read_record, still_unpacked, unpack
from dataset.validation import read_table
from helpers.base.command_line import StrictParser
from helpers.base.errors import DataError

# zip compresses wav files by little: the estimate before the first byte is generous, and the exact size
# is checked from each archive's own listing before it is unpacked
UNPACKED_PER_ARCHIVE_BYTE = 1.15
ONLY_SPLIT_SHARE = sum(PUBLISHED_TOTALS[name] for name in ONLY_SPLIT_FILES) / PUBLISHED_TOTALS["meta.csv"]


@dataclass
class Plan:
    """One record's archives and what this run has to do with each."""
    record: Record
    archives: list
    done: set = field(default_factory=set)  # names unpacked earlier, their files still there
    here: set = field(default_factory=set)  # names already in DIR, to be checked

    def unpacked_size(self, archive, only_split) -> float:
        share = ONLY_SPLIT_SHARE if only_split and self.record is DEVELOPMENT and "audio" in archive.name else 1.0
        return (archive.size or 0) * UNPACKED_PER_ARCHIVE_BYTE * share


def make_plan(record, folder: Path, args) -> Plan:
    listing, why = fetch_listing(listing_url(record, args.zenodo_url), folder / STATE / f"record-{record.record}.json")
    if listing is None and not record.published_md5:
        raise DataError(f"Could not read the listing of {record.title} from {listing_url(record, args.zenodo_url)} "
                        f"({why}): it names the archives and their checksums. Run the same command again when the "
                        f"connection is back, or save that address's answer as {folder / STATE}/record-"
                        f"{record.record}.json by hand.")
    if listing is None:
        say(f"  The listing could not be fetched from {listing_url(record, args.zenodo_url)} ({why}): going on with "
            "the published archive names and checksums.")
    listed = parse_listing(listing, record, args.zenodo_url) if listing is not None else None
    plan = Plan(record, published_archives(record, listed, args.zenodo_url))
    for index, archive in enumerate(plan.archives):
        earlier, changed = still_unpacked(folder, archive, args.only_split if record is DEVELOPMENT else None)
        if earlier and not changed:
            plan.done.add(archive.name)
        elif (folder / archive.name).is_file():
            plan.here.add(archive.name)
            if archive.size is None:  # not listed: the copy here tells
                plan.archives[index] = replace(archive, size=(folder / archive.name).stat().st_size)
        if changed:
            say(f"  {archive.name}: {changed:,} of its files have gone or changed since it was unpacked: "
                "unpacking it again.")
    return plan


def check_space(plans: list, folder: Path, args) -> None:
    """Before the first byte: say how much disk the rest needs, and stop if there is less."""
    pending = [(plan, a) for plan in plans for a in plan.archives if a.name not in plan.done]
    to_fetch = [a.size or 0 for plan, a in pending if a.name not in plan.here]
    unpacked = sum(plan.unpacked_size(a, args.only_split) for plan, a in pending)
    held = sum(to_fetch) if args.keep_archives else max(to_fetch, default=0)
    need, free = unpacked + held, free_bytes(folder)
    unknown = sum(1 for plan, a in pending if a.size is None)
    todo = f"{len(pending)} of {sum(len(p.archives) for p in plans)} archives to do"
    if unknown == len(pending):
        say(f"{todo}; their sizes are not known without the record's listing, so the disk space is checked only "
            f"before each archive is unpacked. {folder} has {gb(free)} free.")
        return
    say(f"{todo}, {gb(sum(to_fetch))} to download. Needs about {gb(need)} of disk (unpacked files {gb(unpacked)}, "
        f"{'every archive kept' if args.keep_archives else 'one archive at a time'} {gb(held)}); "
        f"{folder} has {gb(free)} free." + (f" ({unknown} archives' sizes are not known.)" if unknown else ""))
    if need > free:
        development = any(plan.record is DEVELOPMENT for plan in plans)
        hint = "" if args.only_split or not development else (
            f" or --only_split 25 (the development set's 25 % and test splits only, about {ONLY_SPLIT_SHARE * 100:.0f}"
            " % of its clips)")
        raise DataError(f"Not enough disk space in {folder}: the download needs about {gb(need)}, the disk has "
                        f"{gb(free)} free. Stopped before the first byte. Free some space, pass a --dir on a larger "
                        f"disk,{hint}{' or leave out --keep_archives' if args.keep_archives else ''}.")


def run_plan(plan: Plan, folder: Path, args, bars: Bars):
    """Fetch, check and unpack the record's archives in order; returns its data folder."""
    only_split = args.only_split if plan.record is DEVELOPMENT else None
    data_dir, wanted = None, None
    for number, archive in enumerate(plan.archives):
        path = folder / archive.name
        if archive.name in plan.done:
            record = read_record(folder, archive.name)
            say(f"  {archive.name}: unpacked earlier ({_files(record)})")
        else:
            how = "downloaded"
            if archive.name in plan.here:
                found = pooch.file_hash(str(path), alg="md5")
                if found == archive.md5:
                    how = "here already"
                else:
                    say(f"  {archive.name}: the copy here has MD5 {found}, not {archive.md5}: downloading it again")
                    path.unlink()
            if not path.is_file():
                fetch_archive(archive, folder, bars, number, len(plan.archives))
            record = unpack(path, folder, archive, wanted if "audio" in archive.name else None, only_split)
            if not args.keep_archives:
                path.unlink()
            skipped = f" ({record['skipped']:,} outside the splits left packed)" if record["skipped"] else ""
            say(f"  {archive.name}: {how}, MD5 {archive.md5} ok; {_files(record)} unpacked{skipped}; "
                f"archive {'kept' if args.keep_archives else 'deleted'}")
        data_dir = data_dir or _data_folder(folder, record, plan.record.table)
        if data_dir is not None and plan.record is DEVELOPMENT and wanted is None:
            wanted = _fetch_splits(data_dir, folder, args)
    if data_dir is None:
        raise DataError(f"None of the archives of {plan.record.title} holds {plan.record.table}: the record's layout "
                        f"changed. Its files are in {folder}.")
    return data_dir


def _files(record: dict) -> str:
    count = len(record["files"])
    return f"{count:,} file{'s' if count != 1 else ''}"


def _data_folder(folder: Path, record: dict, table: str):
    """The folder that holds ``table`` among the record's files (``<top>/meta.csv``: ``<folder>/<top>``)."""
    for name in sorted(record["files"], key=len):
        if name == table or name.endswith("/" + table):
            return folder / name[: -len(table)]
    return None


def _fetch_splits(data_dir: Path, folder: Path, args):
    """The split files into ``--split_dir``, as the training scripts fetch them; with ``--only_split`` the
    test for the audio files to unpack, else a test that takes every file."""
    names = set()
    for name in ONLY_SPLIT_FILES:
        names.update(read_table(split_file(args.split_dir, name, data_dir, url=args.split_url))["filename"])
    say(f"  split files {', '.join(ONLY_SPLIT_FILES)}: in {args.split_dir}/")
    if not args.only_split:
        return lambda member: True
    inside = data_dir.relative_to(folder).as_posix()
    keep = {name if inside == "." else f"{inside}/{name}" for name in names}
    return lambda member: member in keep


def run(args) -> None:
    if args.only_split and args.dataset == "evaluation":
        raise DataError("--only_split selects clips of the development set's splits: the evaluation set has none. "
                        "Leave it out, or download `development` or `all`.")
    folder = Path(args.dir).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    records = list(RECORDS.values()) if args.dataset == "all" else [RECORDS[args.dataset]]
    plans = []
    for record in records:
        say(f"{record.title} (Zenodo record {record.record}, DOI {record.doi}) into {folder}")
        plans.append(make_plan(record, folder, args))
    check_space(plans, folder, args)
    total = sum(a.size or 0 for plan in plans for a in plan.archives if a.name not in plan.done | plan.here)
    bars = Bars(total, sum(len(plan.archives) - len(plan.done | plan.here) for plan in plans))
    try:
        data_dirs = {plan.record.name: run_plan(plan, folder, args, bars) for plan in plans}
    finally:
        bars.end()
    for name, data_dir in data_dirs.items():
        say(f"Checking {data_dir}:")
        for line in check_folder(data_dir, args.split_dir, args.only_split if name == "development" else None):
            say(f"  {line}")
    if "development" in data_dirs:
        say(f"\nexport {DATASET_DIR_ENV}={data_dirs['development']}\nNext: python train_base.py"
            + ("" if args.split_dir == "split_setup" else f" --split_dir {args.split_dir}"))
    if "evaluation" in data_dirs:
        say(f"\nThe evaluation set, for --evaluate: --eval_dir {data_dirs['evaluation']}")


def build_parser() -> StrictParser:
    parser = StrictParser(prog="python -m dataset.download", description=__doc__.split("\n\n")[0].replace("``", ""),
                          epilog="Docs: docs/data.md. Check a folder downloaded by hand: python -m dataset.check.")
    parser.add_argument("dataset", choices=["development", "evaluation", "all"],
                        help="TAU Urban Acoustic Scenes 2022 Mobile development, the 2025 evaluation set, or both")
    parser.add_argument("--dir", required=True, help="the download folder; each set is unpacked into its own folder "
                                                     "there, as its archives name it")
    parser.add_argument("--keep_archives", action="store_true", help="keep the zip archives after unpacking them")
    parser.add_argument("--only_split", type=int, choices=[25], default=None,
                        help="unpack only the development clips of split25.csv and test.csv (the archives are still "
                             "downloaded whole)")
    parser.add_argument("--split_dir", default="split_setup", help="where the split files go, as for the training "
                                                                   "scripts")
    parser.add_argument("--zenodo_url", default=ZENODO, help="Zenodo, or a mirror that answers as it does")
    parser.add_argument("--split_url", default=SPLIT_URL, help="where the split files are published")
    return parser


def main(argv=None) -> None:
    """The command: a problem the user fixes ends it with one message, Ctrl-C with how to resume."""
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except DataError as err:
        sys.exit(f"error: {err}")
    except KeyboardInterrupt:
        sys.exit("\nInterrupted. Run the same command again to resume: every archive checked so far is kept, and "
                 "an archive interrupted while unpacking is unpacked again.")


if __name__ == "__main__":
    main()
