"""Where the data sets are published: the Zenodo records, the development set's archives with their
published MD5 checksums, the published totals, and the record listing read from Zenodo's API.

The listing (``<zenodo>/api/records/<record>``) drives what is fetched: names, sizes, checksums and
addresses. For the development set the names and checksums must also match the published ones below,
so that a changed or truncated archive is refused even where the listing itself changed.
"""
import re
from dataclasses import dataclass, field

from helpers.base.errors import DataError

ZENODO = "https://zenodo.org"
DEVELOPMENT_PREFIX = "TAU-urban-acoustic-scenes-2022-mobile-development"

# the published totals of the development set: clips in meta.csv and in the split files
PUBLISHED_TOTALS = {"meta.csv": 230_350, "split25.csv": 34_900, "test.csv": 29_680}
ONLY_SPLIT_FILES = ("split25.csv", "test.csv")  # what --only_split 25 unpacks the clips of


@dataclass(frozen=True)
class Record:
    """One published data set: its Zenodo record and what marks its folder once unpacked."""
    name: str  # as the command line names it
    title: str
    record: str
    doi: str
    table: str  # the file, relative to the data folder, that lists the clips
    published_md5: dict = field(default_factory=dict)  # archive name -> MD5, where published


DEVELOPMENT = Record(
    "development", "TAU Urban Acoustic Scenes 2022 Mobile, development", "6337421", "10.5281/zenodo.6337421",
    "meta.csv",
    {f"{DEVELOPMENT_PREFIX}.{part}.zip": md5 for part, md5 in [
        ("audio.1", "8be14bdbd844481dce059ab31fbd2239"), ("audio.2", "e821abda49b069248bb75eab39df7575"),
        ("audio.3", "9c7897f78bb42ca0008936daddf3f8f3"), ("audio.4", "53ec3e37c0fc0be75f53c5abbc5300b8"),
        ("audio.5", "528422c33c5d10263203d2c61cb1f3be"), ("audio.6", "4759a9465c903e13e57d5e82e791fc28"),
        ("audio.7", "6d545fc83a55a17856a9ccc1ac9aff6b"), ("audio.8", "3a2916a9b5d3f43cc7a22a62b180b0d9"),
        ("audio.9", "071f664c86639ad730f7be4e3c39d886"), ("audio.10", "e0839d019e9b77ecbcbb0eff85965530"),
        ("audio.11", "fc60f1c83726be3963ae14fbcb95eeb4"), ("audio.12", "02246547f86c0a814dc63ec65d7033bb"),
        ("audio.13", "88ae9ef884665140d1572d8061725e00"), ("audio.14", "c3f400d74ae90e5190dc518cde43de47"),
        ("audio.15", "85594c6fe4f91c10aa2a410f748103b8"), ("audio.16", "6e2df8438c69f6789414aeba8cbad9d8"),
        ("doc", "9c4f610bdb5d3e3e72a17d393a26452a"), ("meta", "419b6ff6570f1030730352dc80cd8d15")]})
# its archive names and checksums are known only from the record's listing
EVALUATION = Record("evaluation", "TAU Urban Acoustic Scenes 2025 Mobile, evaluation", "15517945",
                    "10.5281/zenodo.15517945", "evaluation_setup/fold1_test.csv")
RECORDS = {record.name: record for record in (DEVELOPMENT, EVALUATION)}


@dataclass(frozen=True)
class Archive:
    """One file of a record: where it comes from and what it must hash to."""
    name: str
    url: str
    md5: str
    size: int | None  # bytes, as the listing says (None: not listed)


def listing_url(record: Record, zenodo: str = ZENODO) -> str:
    return f"{zenodo.rstrip('/')}/api/records/{record.record}"


def file_url(record: Record, name: str, zenodo: str = ZENODO) -> str:
    """The download address Zenodo's web pages give a file of a record."""
    return f"{zenodo.rstrip('/')}/records/{record.record}/files/{name}?download=1"


def parse_listing(listing: dict, record: Record, zenodo: str = ZENODO) -> list:
    """The ``Archive`` of each file of a Zenodo API record (``files``, a list or InvenioRDM's ``entries``:
    ``key`` or ``filename``, ``checksum`` as ``md5:<hex>`` or bare hex, ``size``). Files are fetched from the
    download address of the record's web page (``file_url``)."""
    files = listing.get("files") or []
    if isinstance(files, dict):  # InvenioRDM's own record format: {"entries": {name: entry}}
        entries = files.get("entries") or {}
        files = list(entries.values()) if isinstance(entries, dict) else list(entries)
    archives = []
    for entry in files:
        name = entry.get("key") or entry.get("filename")
        checksum = str(entry.get("checksum", ""))
        algorithm, _, digest = checksum.rpartition(":")
        if not name or (algorithm or "md5") != "md5" or not re.fullmatch(r"[0-9a-fA-F]{32}", digest):
            raise DataError(f"The listing of Zenodo record {record.record} ({listing_url(record, zenodo)}) has an "
                            f"entry without a name or an MD5 checksum ({entry!r:.200}): the record's format changed. "
                            "Download the archives by hand and check them with python -m dataset.check.")
        size = entry.get("size")
        archives.append(Archive(name, file_url(record, name, zenodo), digest.lower(),
                                int(size) if size is not None else None))
    if not archives:
        raise DataError(f"The listing of Zenodo record {record.record} ({listing_url(record, zenodo)}) names no files.")
    return archives


def published_archives(record: Record, listed: list | None, zenodo: str = ZENODO) -> list:
    """What to fetch, in the order to unpack it (tables before audio, audio parts by number).

    With published checksums (the development set) exactly the published archives, each of which the
    listing, where there is one, must name with the same checksum; otherwise every file listed."""
    listed_by_name = {archive.name: archive for archive in listed or []}
    if not record.published_md5:
        archives = list(listed_by_name.values())
    else:
        changed = [f"{name}: listed {listed_by_name[name].md5}, published {md5}"
                   for name, md5 in record.published_md5.items()
                   if name in listed_by_name and listed_by_name[name].md5 != md5]
        absent = [name for name in record.published_md5 if listed is not None and name not in listed_by_name]
        if changed or absent:
            lines = changed + [f"{name}: not in the listing" for name in absent]
            raise DataError(f"Zenodo record {record.record} ({listing_url(record, zenodo)}) no longer lists the "
                            f"archives of {record.title} as they were published:\n  " + "\n  ".join(lines) +
                            "\nNothing was downloaded: the record changed, and the published totals this project "
                            "checks against may no longer hold.")
        archives = [listed_by_name.get(name) or Archive(name, file_url(record, name, zenodo), md5, None)
                    for name, md5 in record.published_md5.items()]
    return sorted(archives, key=unpack_order)


def unpack_order(archive: Archive):
    """Archives without audio first (the tables name the clips), then the audio parts by their number."""
    numbers = [int(number) for number in re.findall(r"\d+", archive.name)]
    return ("audio" in archive.name, numbers, archive.name)
