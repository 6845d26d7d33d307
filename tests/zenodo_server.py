"""A stand-in for Zenodo and the organisers' split-file release on the loopback address, for the
download tests: small archives in the real names and layout, built from the demo set, and a record
listing in the format of Zenodo's API. It can drop a connection in the middle of a file, serve a
corrupt file, or answer with a server error, and it logs what was asked for.
"""
import hashlib
import http.server
import io
import json
import threading
import zipfile
from pathlib import Path
from urllib.parse import unquote, urlparse

from dataset.sources import DEVELOPMENT, DEVELOPMENT_PREFIX, EVALUATION

EVALUATION_PREFIX = "TAU-urban-acoustic-scenes-2025-mobile-evaluation"  # a guess: the record is not readable here
AUDIO_PARTS = 16
CLIPS = {"split25.csv": 12, "test.csv": 12, None: 8}  # clips taken from each part of the demo set (None: the rest)


def _rows(path: Path) -> list:
    return [line for line in path.read_text().splitlines()[1:] if line.strip()]


def _zip(members: dict) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as package:
        for name, data in members.items():  # a fixed date: the same archive, byte for byte, every time
            package.writestr(zipfile.ZipInfo(name, date_time=(2022, 3, 1, 0, 0, 0)), data,
                             compress_type=zipfile.ZIP_DEFLATED, compresslevel=1)
    return buffer.getvalue()


def development_archives(demo_dir: Path) -> tuple:
    """``({archive name: bytes}, {split file name: bytes})``: a few dozen demo clips in the 18 archives of
    the development set (the clips spread over the 16 audio parts), and their split files."""
    header = (demo_dir / "meta.csv").read_text().splitlines()[0]
    meta = {row.split("\t")[0]: row for row in _rows(demo_dir / "meta.csv")}
    splits, chosen = {}, []
    for name, count in CLIPS.items():
        if name is None:
            chosen += [clip for clip in meta if clip not in set(chosen)][:count]
            continue
        rows = _rows(demo_dir / "split_setup" / name)[:count]
        splits[name] = ("filename\tscene_label\n" + "\n".join(rows) + "\n").encode()
        chosen += [row.split("\t")[0] for row in rows]
    top = DEVELOPMENT_PREFIX + "/"
    archives = {
        f"{DEVELOPMENT_PREFIX}.meta.zip": _zip({top + "meta.csv": header + "\n" + "\n".join(
            meta[clip] for clip in sorted(chosen)) + "\n"}),
        f"{DEVELOPMENT_PREFIX}.doc.zip": _zip({top + "README.md": "TAU Urban Acoustic Scenes 2022 Mobile (stand-in)\n",
                                              top + "LICENSE": "for the tests only\n"}),
    }
    for part in range(1, AUDIO_PARTS + 1):
        clips = sorted(chosen)[part - 1::AUDIO_PARTS]
        archives[f"{DEVELOPMENT_PREFIX}.audio.{part}.zip"] = _zip(
            {top + clip: (demo_dir / clip).read_bytes() for clip in clips})
    return archives, splits


def evaluation_archives(demo_dir: Path) -> dict:
    """The demo evaluation set as two archives: the table, and the audio."""
    top = EVALUATION_PREFIX + "/"
    table = demo_dir / "eval" / "evaluation_setup" / "fold1_test.csv"
    clips = [row.split("\t")[0] for row in _rows(table)]
    return {f"{EVALUATION_PREFIX}.meta.zip": _zip({top + "evaluation_setup/fold1_test.csv": table.read_text()}),
            f"{EVALUATION_PREFIX}.audio.1.zip": _zip({top + c: (demo_dir / "eval" / c).read_bytes() for c in clips})}


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


class ZenodoStandIn:
    """``with ZenodoStandIn(records, splits) as server``: ``server.url`` for ``--zenodo_url``,
    ``server.url + "/split"`` for ``--split_url``; ``records`` is ``{record id: {name: bytes}}``.

    ``drop[name] = n``: the next n requests for ``name`` break off half-way; ``corrupt[name] = n``: the
    next n are served with a byte changed; ``fail[name] = status``: every request gets that status;
    ``sizes[name]``: the size the listing gives. ``fetched`` lists the names of the files served whole.
    """

    def __init__(self, records: dict, splits: dict):
        self.records, self.splits = records, splits
        self.drop, self.corrupt, self.fail, self.sizes = {}, {}, {}, {}
        self.fetched, self.requests = [], []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep the test output clean
                pass

            def do_GET(self):
                server.requests.append(self.path)
                server.answer(self)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    def listing(self, record: str) -> dict:
        """A record as Zenodo's API gives it (``GET /api/records/<id>``)."""
        return {"id": int(record), "doi": f"10.5281/zenodo.{record}", "files": [
            {"id": md5(name.encode()), "key": name, "size": self.sizes.get(name, len(data)),
             "checksum": f"md5:{md5(data)}",
             "links": {"self": f"{self.url}/api/records/{record}/files/{name}/content"}}
            for name, data in self.records[record].items()]}

    def answer(self, handler) -> None:
        parts = [unquote(part) for part in urlparse(handler.path).path.strip("/").split("/")]
        if parts[:2] == ["api", "records"] and len(parts) == 3 and parts[2] in self.records:
            return self.send(handler, json.dumps(self.listing(parts[2])).encode(), "application/json")
        if parts[:1] == ["records"] and len(parts) == 4 and parts[2] == "files" and parts[1] in self.records:
            name = parts[3]
            data = self.records[parts[1]].get(name)
            if data is None:
                return handler.send_error(404)
            if name in self.fail:
                return handler.send_error(self.fail[name])
            if self.drop.get(name):
                self.drop[name] -= 1
                return self.send(handler, data, cut=len(data) // 2)
            if self.corrupt.get(name):
                self.corrupt[name] -= 1
                data = data[:100] + bytes([data[100] ^ 0xFF]) + data[101:]
            self.fetched.append(name)
            return self.send(handler, data)
        if parts[:1] == ["split"] and len(parts) == 2 and parts[1] in self.splits:
            return self.send(handler, self.splits[parts[1]], "text/csv")
        handler.send_error(404)

    @staticmethod
    def send(handler, data: bytes, kind="application/octet-stream", cut=None) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", kind)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data if cut is None else data[:cut])
        if cut is not None:  # the connection breaks off: the client sees fewer bytes than announced
            handler.close_connection = True


def records_from_demo(demo_dir: Path) -> tuple:
    """``(records, splits)`` for ``ZenodoStandIn``: both sets built from the demo set."""
    development, splits = development_archives(demo_dir)
    return {DEVELOPMENT.record: development, EVALUATION.record: evaluation_archives(demo_dir)}, splits
