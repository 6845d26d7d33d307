"""Run set-up shared by both scripts: data location, loaders, logger, trainer and checkpoints."""
import netrc
import os
import secrets
import string
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from torch.utils.data import DataLoader

from dataset.dcase25 import AudioDataset, resolve_dataset_dir


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


def effective_num_workers(requested: int) -> int:
    cpus = available_cpus()
    if requested > cpus:
        print(f"--num_workers {requested} capped at {cpus}, the number of CPU cores available.")
        return cpus
    return requested


def make_loader(dataset_dir, rows, args, train: bool, device_column="source_label") -> DataLoader:
    """A DataLoader over ``rows``; training loaders shuffle and roll the waveform."""
    roll_samples = int(args.orig_sample_rate * args.roll_sec) if train else 0
    workers = effective_num_workers(args.num_workers)
    return DataLoader(AudioDataset(dataset_dir, rows, roll_samples=roll_samples, device_column=device_column),
                      batch_size=args.batch_size, shuffle=train, num_workers=workers,
                      persistent_workers=workers > 0, pin_memory=torch.cuda.is_available())


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


def new_run_id() -> str:
    """Eight lowercase letters and digits, the form of a wandb run id."""
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))


def make_logger(args, run_id=None):
    """The run's logger and id: Weights & Biases (online or offline), or a CSV file when disabled."""
    mode = resolve_wandb_mode(args.wandb_mode)
    run_id = run_id or new_run_id()
    if mode == "disabled":
        return CSVLogger(save_dir=args.project_name, name="", version=run_id), run_id, mode
    os.environ["WANDB_MODE"] = mode  # also stops wandb from asking for a login offline
    logger = WandbLogger(project=args.project_name, name=args.experiment_name, id=run_id, mode=mode,
                         save_dir=".", config={k: v for k, v in vars(args).items() if not k.startswith("_")})
    if mode == "offline":
        print("wandb is offline (no credentials found); sync the run later with: wandb sync --sync-all")
    return logger, run_id, mode


def checkpoint_dir(project_name, run_id) -> Path:
    return Path(project_name) / run_id / "checkpoints"


def make_trainer(args, logger, run_id, checkpointing=True, **kwargs) -> L.Trainer:
    """A Trainer for this run; with ``checkpointing`` it keeps ``last.ckpt`` at
    ``<project_name>/<run id>/checkpoints/``, updated after every epoch."""
    callbacks = []
    if checkpointing:
        callbacks.append(ModelCheckpoint(dirpath=checkpoint_dir(args.project_name, run_id),
                                         save_last=True, save_top_k=0))
    return L.Trainer(
        max_epochs=args.n_epochs,
        logger=logger,
        callbacks=callbacks,
        enable_checkpointing=checkpointing,
        accelerator="auto",
        devices=1,
        precision=args.precision,
        check_val_every_n_epoch=args.check_val_every_n_epoch,
        num_sanity_val_steps=0,
        enable_model_summary=False,
        **kwargs,
    )
