"""Reading what wandb wrote offline (``wandb/offline-run-<time>-<id>/run-<id>.wandb``), for the tests.

The file is wandb's transaction log: a 7-byte header (``:W&B``, magic, version), then records in
32 KiB blocks, each record with a 7-byte header (CRC, length, type: 1 full, 2 first, 3 middle, 4 last)
and a protobuf ``Record`` as payload.
"""
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK = 32768
HEADER = 7


def records(path):
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a wandb transaction log"
    position, pending = HEADER, b""
    while position + HEADER <= len(data):
        left_in_block = BLOCK - position % BLOCK
        if left_in_block < HEADER:  # too short for a record header: zero padding up to the next block
            position += left_in_block
            continue
        length, kind = int.from_bytes(data[position + 4:position + 6], "little"), data[position + 6]
        payload = data[position + HEADER:position + HEADER + length]
        position += HEADER + length
        if kind == 0:
            continue
        pending += payload
        if kind in (1, 4):
            yield wandb_internal_pb2.Record.FromString(pending)
            pending = b""


def offline_runs(workdir, run_id) -> list:
    """The offline run folders of wandb run ``run_id`` under ``<workdir>/wandb/``."""
    return sorted(Path(workdir, "wandb").glob(f"offline-run-*-{run_id}"))


def read_run(folder) -> dict:
    """What one offline run folder holds: its id and name, its config keys, the logged metric names,
    and whether the run was finished (an exit record)."""
    folder = Path(folder)
    run = {"id": None, "name": None, "config": set(), "metrics": set(), "finished": False}
    for record in records(next(folder.glob("run-*.wandb"))):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run["id"], run["name"] = record.run.run_id, record.run.display_name
            run["config"] |= {item.key for item in record.run.config.update}
        elif kind == "config":
            run["config"] |= {item.key for item in record.config.update}
        elif kind == "history":
            run["metrics"] |= {item.key or "/".join(item.nested_key) for item in record.history.item}
        elif kind == "exit":
            run["finished"] = True
    return run
