"""Fetching a record's listing and its archives with pooch, with progress bars, and what to tell the
user when that fails.

pooch downloads each archive to a temporary name, checks its MD5 and only then gives it its real name
(a broken download is deleted), so an archive under its own name has always been checked once.
pooch's DOI support is not used: it resolves DOIs through doi.org and builds zenodo.org addresses
itself, which would leave the tests' local server (and any mirror) no way in; the listing it reads
is the same Zenodo API record that ``fetch_listing`` reads.
"""
import errno
import json
import logging
import os
import re
from pathlib import Path

import pooch
import requests
from tqdm import tqdm

from dataset.sources import Archive
from helpers.base.errors import DataError

TIMEOUT = 60  # seconds without an answer before the connection counts as lost
CHUNK = 1 << 20  # bytes written per step

pooch.get_logger().setLevel(logging.WARNING)  # the command says what it fetches; pooch need not


class Bars:
    """The progress bars of a download: the archive being fetched and the whole download. pooch's
    downloader drives it through ``total``, ``update``, ``reset`` and ``close``."""

    def __init__(self, total_bytes: int, count: int):
        self.overall = tqdm(total=total_bytes or None, unit="B", unit_scale=True, position=0,
                            desc=f"{count} archive{'s' if count != 1 else ''}", dynamic_ncols=True)
        self.current = None
        self.finished = 0  # bytes of the archives fetched so far
        self.received = 0  # bytes of the archive being fetched

    def start(self, name: str, size) -> None:
        self.current = tqdm(total=size, unit="B", unit_scale=True, position=1, leave=False, desc=short_name(name),
                            dynamic_ncols=True)
        self.received = 0

    @property
    def total(self):
        return self.current.total

    @total.setter
    def total(self, size):
        self.current.total = size or None
        self.current.refresh()

    def update(self, size: int) -> None:
        if self.current.total:  # the downloader counts whole chunks; the last one is shorter
            size = min(size, self.current.total - self.received)
        self.received += size
        self.current.update(size)
        self.overall.update(self.finished + self.received - self.overall.n)

    def reset(self) -> None:
        """The downloader's last step (``reset``, then ``update(total)``); without a known total it would
        undo the count, so then the count stays."""
        if self.current.total:
            self.received = 0
            self.current.reset(total=self.current.total)

    def close(self) -> None:
        """The archive is complete: its bytes stay in the overall bar."""
        self.finished += self.received
        self.received = 0
        self.current.close()

    def abandon(self) -> None:
        """The archive failed: its bytes leave the overall bar."""
        self.received = 0
        if self.current is not None:
            self.current.close()
        self.overall.update(self.finished - self.overall.n)

    def end(self) -> None:
        self.overall.close()


def short_name(name: str) -> str:
    """``audio.3.zip`` for ``TAU-urban-...-development.audio.3.zip``: the bar's label."""
    return name.split("-development.")[-1].split("-evaluation.")[-1]


def say(line: str) -> None:
    """A line for the user that does not tear the progress bars."""
    tqdm.write(line)


def fetch_listing(url: str, saved: Path):
    """``(listing, None)`` fetched from ``url`` (and saved to ``saved``); without an answer the saved
    copy of an earlier run, ``(None, reason)`` where there is none."""
    part = saved.with_name(saved.name + ".part")
    saved.parent.mkdir(parents=True, exist_ok=True)
    try:
        pooch.HTTPDownloader(timeout=TIMEOUT)(url, str(part), None)
        listing = json.loads(part.read_text())
        os.replace(part, saved)
        return listing, None
    except (requests.RequestException, ValueError) as err:
        part.unlink(missing_ok=True)
        why = reason(err) if isinstance(err, requests.RequestException) else "its answer is not JSON"
        if saved.is_file():
            say(f"  The listing could not be fetched from {url} ({why}): using the copy saved by an earlier run, "
                f"{saved}.")
            return json.loads(saved.read_text()), None
        return None, why


def fetch_archive(archive: Archive, folder: Path, bars: Bars, done: int, count: int) -> Path:
    """``folder/<name>`` downloaded and checked; a checksum that does not match is tried once more.
    ``done`` of ``count`` archives are finished (for the message when the connection fails)."""
    found = None
    for attempt in (1, 2):
        bars.start(archive.name, archive.size)
        try:
            downloader = pooch.HTTPDownloader(progressbar=bars, timeout=TIMEOUT, chunk_size=CHUNK)
            pooch.retrieve(archive.url, known_hash=f"md5:{archive.md5}", fname=archive.name, path=folder,
                           downloader=downloader)
            return folder / archive.name
        except ValueError as err:
            bars.abandon()
            if "does not match the known hash" not in str(err):
                raise
            found = (re.findall(r"got ([0-9a-fA-F]{32})", str(err)) or ["(not reported)"])[0]
            if attempt == 1:
                say(f"  {archive.name}: MD5 {found} instead of {archive.md5}; downloading it once more")
        except requests.RequestException as err:
            bars.abandon()
            raise DataError(connection_message(archive, folder, reason(err), done, count)) from None
        except OSError as err:
            bars.abandon()
            if err.errno == errno.ENOSPC:
                raise DataError(disk_full_message(folder, f"downloading {archive.name}")) from None
            raise
        except BaseException:  # Ctrl-C: pooch has removed its temporary file
            bars.abandon()
            raise
    raise DataError(f"{archive.name}, downloaded twice from {archive.url}, does not match its checksum: MD5 expected "
                    f"{archive.md5}, found {found}. The broken file was removed. The archive on the server may be "
                    f"damaged or replaced: try again later, or download it by hand into {folder}/, compare "
                    f"`md5sum {archive.name}` with {archive.md5}, and run the command again.")


def reason(err: requests.RequestException) -> str:
    """What went wrong, in a few words."""
    response = getattr(err, "response", None)
    if isinstance(err, requests.HTTPError) and response is not None:
        return f"the server answered {response.status_code} {response.reason or ''}".rstrip()
    if isinstance(err, requests.Timeout):
        return f"no answer within {TIMEOUT} s"
    if isinstance(err, requests.exceptions.ChunkedEncodingError):
        return "the connection broke off in the middle of the file"
    if isinstance(err, requests.ConnectionError):
        host = getattr(getattr(err, "request", None), "url", None) or "the server"
        return f"no connection to {requests.utils.urlparse(host).netloc or host}"
    return f"{type(err).__name__}: {str(err)[:200]}"


def connection_message(archive: Archive, folder: Path, why: str, done: int, count: int) -> str:
    return (f"Could not download {archive.name} from {archive.url} ({why}).\n"
            f"Nothing is lost: run the same command again when the connection is back; it resumes from what is in "
            f"{folder}/ ({done} of {count} archives finished there) and fetches only the rest.\n"
            f"Without a connection on this machine, download the file elsewhere and put it into {folder}/ under its "
            "own name; the command checks it and goes on from there.")


def disk_full_message(folder: Path, doing: str) -> str:
    return (f"The disk holding {folder} is full ({doing}). Free some space, or pass a --dir on a larger disk, "
            "and run the same command again: it resumes from what is there.")
