"""Run set-up shared by both scripts: data location, loaders, logger, trainer and checkpoints."""
import functools
import hashlib
import json
import logging
import netrc
import os
import secrets
import string
import sys
import time
import warnings
from pathlib import Path

import lightning as L
import torch
import wandb
from lightning.fabric.utilities.seed import pl_worker_init_function
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.data import DataLoader, DistributedSampler

from dataset.cache import AudioCache
from dataset.dcase25 import AudioDataset, resolve_dataset_dir
from dataset.impulse_responses import load_impulse_responses
from dataset.validation import check_outside_dataset, scan_audio
from helpers.checkpoints import CheckpointError, run_dirs
from helpers.files import write_json
from models.augmentation import check_augmentation_flags


say = rank_zero_only(print)  # messages for the user, once per distributed run


def is_rank_zero() -> bool:
    return rank_zero_only.rank == 0


def prepare_dataset_dir(args) -> Path:
    """The data folder of this run; with ``--demo`` the demo set is written first if it is not there
    (a demo set written earlier with other ``python -m dataset.demo`` options is kept)."""
    if args.demo:
        from dataset.demo import is_complete, write_demo_dataset
        if not is_complete(args.dataset_dir):
            write_demo_dataset(args.dataset_dir)
    return resolve_dataset_dir(args.dataset_dir)


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@functools.lru_cache(maxsize=None)  # say it once per run, not once per loader
def effective_num_workers(requested: int) -> int:
    cpus = available_cpus()
    if requested > cpus:
        say(f"--num_workers {requested} capped at {cpus}, the number of CPU cores available.")
        return cpus
    return requested


DEFAULT_NUM_WORKERS = 8


def trains_on_cpu(args) -> bool:
    return args.accelerator == "cpu" or (args.accelerator == "auto" and not torch.cuda.is_available())


def loader_workers(args, cache) -> int:
    """``--num_workers``, or by default: none when the audio cache is read on a CPU (a batch is one
    copy out of the mapped array, about 1 % of a training step, while worker processes take cores from
    the computation's threads, which wait for each other: 3-5 % slower on 2 cores, see the README's
    Speed section), else ``DEFAULT_NUM_WORKERS`` (decoding wav files needs them); capped at the cores."""
    if args.num_workers is not None:
        return effective_num_workers(args.num_workers)
    return 0 if cache is not None and trains_on_cpu(args) else effective_num_workers(DEFAULT_NUM_WORKERS)


def input_sample_rate(args) -> int:
    """The rate at which audio reaches the front end: cached audio is already resampled."""
    return args.sample_rate if args.cache_dir else args.orig_sample_rate


def check_audio(args, dataset_dir, *row_sets):
    """Before training: refuse missing or broken audio files of ``row_sets`` (one DataError naming
    them), and say how many clips are unusual but usable (other length, rate or channel count)."""
    filenames = [name for rows in row_sets for name in rows["filename"]]
    report = scan_audio(dataset_dir, filenames, args.orig_sample_rate)
    if report.error() is not None:
        raise report.error()
    for line in report.notes():
        say(line)
    return report


def check_augmentation(args):
    """Before training: the augmentation flags, and the DIR impulse responses read once (an empty
    folder, a file that cannot be decoded or a silent response ends the script here)."""
    check_augmentation_flags(args)
    if args.dir_p > 0:
        rate = input_sample_rate(args)
        responses, _ = load_impulse_responses(args.dir_dir, rate)
        say(f"DIR augmentation: {len(responses)} impulse responses from {args.dir_dir} (resampled to {rate} Hz, "
            f"unit energy); clips of {', '.join(args.dir_devices)} convolved with probability {args.dir_p}.")
    elif args.dir_dir:
        say("--dir_dir is given but --dir_p is 0: no clip is convolved (DIR augmentation is off).")


def open_cache(args, dataset_dir, rows):
    """The audio cache holding ``rows`` (built on first use), or None without ``--cache_dir``."""
    if not args.cache_dir:
        return None
    check_outside_dataset(args.cache_dir, dataset_dir, "--cache_dir")
    return AudioCache.open_or_build(args.cache_dir, dataset_dir, rows["filename"].tolist(), args.sample_rate,
                                    num_workers=effective_num_workers(
                                        DEFAULT_NUM_WORKERS if args.num_workers is None else args.num_workers))


def lower_priority_worker(worker_id: int) -> None:
    """DataLoader workers yield the CPU to the training process: on a CPU its threads use every
    core and wait for each other at every operation, so a worker holding a core stalls them all."""
    if hasattr(os, "nice"):  # not on Windows
        os.nice(19)
    if os.environ.get("PL_SEED_WORKERS") == "1":  # what Lightning would have done (seed_everything(workers=True))
        pl_worker_init_function(worker_id)


def make_loader(dataset_dir, rows, args, train: bool, trainer=None, cache=None,
                device_column="source_label") -> DataLoader:
    """A DataLoader over ``rows``. Training loaders shuffle (the augmentations act on the batch, in
    the training step); evaluation loaders keep each device's clips together so that a device model
    sees full batches. Under DDP (``trainer`` with several processes) each process gets its share:
    shuffled for training, and for evaluation every clip exactly once (no padding duplicates)."""
    if not train:
        rows = rows.sort_values(device_column, kind="stable")
    dataset = AudioDataset(dataset_dir, rows, device_column=device_column, cache=cache,
                           sample_rate=args.orig_sample_rate)
    sampler = None
    if trainer is not None and trainer.world_size > 1:
        if train:
            sampler = DistributedSampler(dataset, trainer.world_size, trainer.global_rank, shuffle=True,
                                         seed=args.seed or 0)
        else:
            sampler = UnrepeatedDistributedSampler(dataset, trainer.world_size, trainer.global_rank, shuffle=False)
    workers = loader_workers(args, cache)
    return DataLoader(dataset, batch_size=args.batch_size, shuffle=train and sampler is None, sampler=sampler,
                      num_workers=workers, persistent_workers=workers > 0, pin_memory=torch.cuda.is_available(),
                      worker_init_fn=lower_priority_worker if workers > 0 else None)


def wandb_has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def resolve_wandb_mode(requested=None) -> str:
    """``--wandb_mode`` if given, else ``$WANDB_MODE``, else online with credentials and offline
    without them, so that a run never stops at a login prompt."""
    mode = requested or os.environ.get("WANDB_MODE")
    if mode in ("online", "offline", "disabled"):
        return mode
    if mode == "dryrun":
        return "offline"
    return "online" if wandb_has_credentials() else "offline"


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
    """The run id and the checkpoint to continue from (None for a new run).

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
    if is_rank_zero() and not info.is_file():
        write_json(info, {"stage": stage, "run_id": run_id, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                          "command": sys.argv})
    if last.is_file():
        if finished_results(project, run_id) is None:  # the script says what it does with a finished run
            say(f"Continuing run {run_id} from {last}.")
        return run_id, last
    return run_id, None


def newest_run(project: Path, stage: str) -> str:
    for run_dir in run_dirs(project):
        info = run_dir / "run.json"
        if info.is_file() and json.loads(info.read_text()).get("stage") == stage:
            return run_dir.name
    raise CheckpointError(f"--resume: no run of this script with a checkpoint under {project}/. "
                          "Name the run (--resume RUN_ID) or start a new one.")


def make_logger(args, run_id: str):
    """The run's logger: Weights & Biases (online or offline), or a CSV file when disabled. Each start
    of a script is a wandb run of its own, with the run id as its id; close it with ``close_logger``."""
    mode = resolve_wandb_mode(args.wandb_mode)
    if mode == "disabled":  # one folder per start, so a resumed run keeps the metrics logged before
        return CSVLogger(save_dir=args.project_name, name=run_id, version=time.strftime("%Y%m%d-%H%M%S")), mode
    # Lightning would log into a wandb run still open in this process (one that stopped with an error)
    wandb.finish()
    os.environ["WANDB_MODE"] = mode  # also stops wandb from asking for a login offline
    # offline, wandb's closing summary of every metric only repeats the console; the line below says how to upload
    logger = WandbLogger(project=args.project_name, name=args.experiment_name, id=run_id, mode=mode,
                         resume="allow", save_dir=".", settings=wandb.Settings(quiet=mode == "offline"),
                         config={k: v for k, v in vars(args).items() if not k.startswith("_")})
    if mode == "offline":
        say("wandb logs offline; upload the run later with: wandb sync --sync-all")
    return logger, mode


def close_logger(logger) -> None:
    """End the run's wandb run. Without this, a second run started in the same process (scripts/demo.py
    runs both stages) would log into this one: its config, its metrics, its id."""
    if isinstance(logger, WandbLogger):
        wandb.finish()


def finished_results(project_name, run_id):
    """The results of run ``run_id`` if it has finished (its final test wrote ``results.json``), else None."""
    results_file = Path(project_name) / run_id / "results.json"
    return json.loads(results_file.read_text())["results"] if results_file.is_file() else None


def set_log_interval(trainer: L.Trainer, train_loader) -> None:
    """Log the training loss about five times per epoch, and at least every 50 steps (Lightning's default
    interval, which alone would log nothing in a phase of fewer steps, such as stage 2 on a small device)."""
    trainer.log_every_n_steps = max(1, min(50, len(train_loader) // 5))


class _DropLightningTips(logging.Filter):
    def filter(self, record):
        return not str(record.msg).startswith("💡 Tip")


def quiet_console() -> None:
    """Keep the console to the progress bars, the project's messages and what a user can act on."""
    # each run has a checkpoint folder of its own; stage 2 keeps its container there beside the phase file
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    # Lightning 2.6 with torch 2.11 warns about its own code on every fit
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        log = logging.getLogger(name)
        if not any(isinstance(f, _DropLightningTips) for f in log.filters):  # advertising for Lightning's cloud
            log.addFilter(_DropLightningTips())


class StopMessages(L.Callback):
    """Tells the user, when a run stops early, which checkpoint is left and how to continue."""

    def __init__(self, run_id):
        self.run_id = run_id

    def on_exception(self, trainer, module, exception):
        if isinstance(exception, KeyboardInterrupt) and trainer.is_global_zero:
            print(f"\nStopped. Continue run {self.run_id} from its last checkpoint (saved after every epoch) by "
                  f"running the same command with --resume {self.run_id}")


def checkpoint_dir(project_name, run_id) -> Path:
    return Path(project_name) / run_id / "checkpoints"


def make_trainer(args, logger, run_id, checkpoint_name="last", **kwargs) -> L.Trainer:
    """A Trainer for this run; it keeps ``<checkpoint_name>.ckpt`` at
    ``<project_name>/<run id>/checkpoints/``, updated after every epoch (none when the name is None)."""
    quiet_console()
    callbacks = [StopMessages(run_id)]
    if checkpoint_name:
        # keep one file, rewritten after every training epoch (also epochs without validation)
        checkpoint = ModelCheckpoint(dirpath=checkpoint_dir(args.project_name, run_id), filename=checkpoint_name,
                                     monitor=None, save_top_k=1, save_on_train_epoch_end=True,
                                     enable_version_counter=False)
        callbacks.append(checkpoint)
    return L.Trainer(
        max_epochs=args.n_epochs,
        logger=logger,
        callbacks=callbacks,
        enable_checkpointing=checkpoint_name is not None,
        accelerator=args.accelerator,
        devices=args.devices,
        num_nodes=args.num_nodes,
        strategy=args.strategy,
        use_distributed_sampler=False,  # make_loader shards the data itself (see there)
        precision=args.precision,
        check_val_every_n_epoch=args.check_val_every_n_epoch,
        num_sanity_val_steps=0,
        enable_model_summary=False,
        **kwargs,
    )


def run_cli(main):
    """Run a script's ``main``; problems the user must fix end with their message, not a traceback."""
    from dataset.audio import AudioError
    from dataset.dcase25 import DataError
    from models.asc_module import NonFiniteLossError
    try:
        return main()
    except (DataError, AudioError, CheckpointError, NonFiniteLossError) as err:
        sys.exit(f"error: {err}")
