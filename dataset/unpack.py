"""Unpacking one archive into the download folder, and the record of what each archive unpacked.

An archive counts as done only through its record, ``<dir>/.dcase25_download/<archive>.json``, written
after every file it was to unpack is on disk with the size the archive gives; an interrupted unpack
leaves no record, so the next run unpacks that archive again. The records also tell ``dataset.check``
which archive a missing clip comes from.
"""
import errno
import json
import os
import shutil
import zipfile
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from dataset.fetch import disk_full_message, short_name
from dataset.sources import Archive
from helpers.base.errors import DataError

STATE = ".dcase25_download"  # beside the data folders: listings and the records of unpacked archives


def free_bytes(folder: Path) -> int:
    return shutil.disk_usage(folder).free


def record_path(folder: Path, name: str) -> Path:
    return folder / STATE / f"{name}.json"


def read_record(folder: Path, name: str):
    """The record of archive ``name`` in download folder ``folder``, or None."""
    try:
        return json.loads(record_path(folder, name).read_text())
    except (OSError, ValueError):
        return None


def all_records(folder: Path) -> list:
    """Every archive record in download folder ``folder``."""
    records = []
    for path in sorted((folder / STATE).glob("*.zip.json")):
        try:
            records.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return records


def still_unpacked(folder: Path, archive: Archive, only_split) -> tuple:
    """``(record, changed)``: the record if ``archive`` was unpacked earlier as this run wants it
    (same checksum; all its clips, or the same split), and how many of its files have gone or changed
    since (then it must be unpacked again)."""
    record = read_record(folder, archive.name)
    if not record or record.get("md5") != archive.md5 or record.get("only_split") not in (None, only_split):
        return None, 0
    changed = sum(1 for name, size in record["files"].items() if _size(folder / name) != size)
    return record, changed


def unpack(path: Path, folder: Path, archive: Archive, wanted=None, only_split=None) -> dict:
    """Unpack the archive at ``path`` into ``folder`` (the files ``wanted(name)`` accepts, or all), check
    that every file arrived whole, and write its record. A file that is not a zip archive stays as it is."""
    if not zipfile.is_zipfile(path):
        return write_record(folder, archive, {archive.name: path.stat().st_size}, only_split, skipped=0)
    try:
        with zipfile.ZipFile(path) as package:
            members = [info for info in package.infolist() if not info.is_dir()]
            unsafe = [info.filename for info in members if not _safe(info.filename)]
            if unsafe:
                raise DataError(f"{path} holds files outside its own folders ({unsafe[0]}): refused.")
            chosen = [info for info in members if wanted is None or wanted(info.filename)]
            need = sum(max(info.file_size - (_size(folder / info.filename) or 0), 0) for info in chosen)
            if need > free_bytes(folder):
                raise DataError(f"Not enough space to unpack {archive.name}: its files need {gb(need)}, the disk "
                                f"holding {folder} has {gb(free_bytes(folder))} free. Free some space and run the "
                                "same command again: it resumes with this archive.")
            for info in tqdm(chosen, desc=f"unpacking {short_name(archive.name)}", unit=" files", position=1,
                             leave=False, dynamic_ncols=True):
                package.extract(info, folder)  # zipfile checks each file's CRC as it reads it
    except OSError as err:
        if err.errno == errno.ENOSPC:
            raise DataError(disk_full_message(folder, f"unpacking {archive.name}")) from None
        raise
    except zipfile.BadZipFile as err:
        raise DataError(f"{path} cannot be unpacked ({err}) although its checksum held: delete it and run the "
                        "command again.") from None
    files = {info.filename: info.file_size for info in chosen}
    short = [name for name, size in files.items() if _size(folder / name) != size]
    if short:
        raise DataError(f"{len(short)} files of {archive.name} did not arrive whole in {folder} (e.g. {short[0]}): "
                        "check the disk and run the command again.")
    return write_record(folder, archive, files, only_split, skipped=len(members) - len(chosen))


def write_record(folder: Path, archive: Archive, files: dict, only_split, skipped: int) -> dict:
    # an archive with nothing left packed is complete, whatever the run asked for
    record = {"archive": archive.name, "md5": archive.md5, "only_split": only_split if skipped else None,
              "skipped": skipped, "files": files}
    path = record_path(folder, archive.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, path)  # the record appears whole or not at all
    return record


def _safe(name: str) -> bool:
    parts = PurePosixPath(name.replace("\\", "/")).parts
    return bool(parts) and not PurePosixPath(name).is_absolute() and ".." not in parts


def _size(path: Path):
    """The file's size, None where there is no file."""
    try:
        return os.stat(path).st_size
    except OSError:
        return None


def gb(size: float) -> str:
    """A size for people: ``12.3 GB``, ``450 MB``, ``12 kB``."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}" if size < 100 * scale else f"{size / scale:,.0f} {unit}"
    return f"{int(size)} bytes"
