"""Run ids and resuming: a new run gets an id (the wandb run id), ``--resume`` and ``--run_id`` find the
checkpoint a stopped run continues from, and a finished run is recognised by its results."""
import hashlib
import json
import os
import secrets
import string
import sys
import time
from pathlib import Path

from helpers.files import write_json
from helpers.setup.checkpoints import CheckpointError, checkpoint_dir, recorded_network, resolve_checkpoint, run_dirs
from helpers.setup.console import is_rank_zero, rank_zero_print

RUN_ID_ENV = "DCASE25_RUN_ID"


def new_run_id(stage: str) -> str:
    """Eight lowercase letters and digits, the form of a wandb run id.

    Every process of a distributed run must agree on it: processes that Lightning starts inherit
    it from the first one through ``$DCASE25_RUN_ID``; processes started together by torchrun or
    SLURM derive it from their launcher's job id (pass --run_id where there is none)."""
    if os.environ.get(RUN_ID_ENV) and not is_rank_zero():
        return os.environ[RUN_ID_ENV]
    job = os.environ.get("SLURM_JOB_ID") or os.environ.get("TORCHELASTIC_RUN_ID")
    alphabet = string.ascii_lowercase + string.digits
    if job and job != "none":
        digest = hashlib.sha256(f"{job}-{stage}".encode()).digest()
        return "".join(alphabet[b % len(alphabet)] for b in digest[:8])
    return "".join(secrets.choice(alphabet) for _ in range(8))


def start_run(args, stage: str) -> tuple:
    """``take_run_id``, then the run's ``run.json`` written: from here on the run has a folder."""
    run_id, last = take_run_id(args, stage)
    record_run(args.project_name, run_id, stage)
    return run_id, last


def take_run_id(args, stage: str) -> tuple:
    """The run id and the checkpoint to continue from (None for a new run); nothing is written.

    ``--resume [ID]`` continues run ID, or the newest run of this ``stage`` under ``--project_name``;
    ``--run_id ID`` continues run ID if it has a checkpoint and starts it otherwise."""
    project = Path(args.project_name)
    run_id = args.run_id
    if args.resume:
        run_id = args.resume if isinstance(args.resume, str) else newest_run(project, stage)
        if not (checkpoint_dir(project, run_id) / "last.ckpt").is_file():
            raise CheckpointError(f"--resume {run_id}: {checkpoint_dir(project, run_id) / 'last.ckpt'} does not "
                                  "exist, so there is nothing to continue. Start a new run without --resume.")
    run_id = run_id or new_run_id(stage)
    os.environ[RUN_ID_ENV] = run_id  # processes of a distributed run inherit it
    last = checkpoint_dir(project, run_id) / "last.ckpt"
    info = project / run_id / "run.json"
    if info.is_file() and json.loads(info.read_text()).get("stage") != stage:
        raise CheckpointError(f"Run {run_id} under {project}/ was made by the other training script; "
                              "choose another --run_id.")
    if last.is_file():
        if finished_results(project, run_id) is None:  # the script says what it does with a finished run
            rank_zero_print(f"Continuing run {run_id} from {last}.")
        return run_id, last
    return run_id, None


def record_run(project_name, run_id: str, stage: str) -> None:
    """The run's ``run.json`` (its stage, id, start time and command), written once by the first process."""
    info = Path(project_name) / run_id / "run.json"
    if is_rank_zero() and not info.is_file():
        write_json(info, {"stage": stage, "run_id": run_id, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                          "command": sys.argv})


def newest_run(project: Path, stage: str) -> str:
    for run_dir in run_dirs(project):
        info = run_dir / "run.json"
        if info.is_file() and json.loads(info.read_text()).get("stage") == stage:
            return run_dir.name
    raise CheckpointError(f"--resume: no run of this script with a checkpoint under {project}/. "
                          "Name the run (--resume RUN_ID) or start a new one.")


def finished_results(project_name, run_id):
    """The results of run ``run_id`` if it has finished (its final test wrote ``results.json``), else None."""
    results_file = Path(project_name) / run_id / "results.json"
    return json.loads(results_file.read_text())["results"] if results_file.is_file() else None


def network_of_run(args):
    """The network stage 2 trains, read from the checkpoint it starts from (or continues), without loading the
    weights; None where there is no such checkpoint (the error comes when the run starts)."""
    try:
        own = args.resume if isinstance(args.resume, str) else newest_run(args.project_name, "device") \
            if args.resume else args.run_id
        if own and (checkpoint_dir(args.project_name, own) / "last.ckpt").is_file():
            return recorded_network(checkpoint_dir(args.project_name, own) / "last.ckpt")
        start = (getattr(args, "merge", None) or [None])[0] or getattr(args, "ckpt_id", None)
        return recorded_network(resolve_checkpoint(start, args.project_name)) if start else None
    except CheckpointError:
        return None
