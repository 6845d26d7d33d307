"""The data of a run: its folder (the demo set written on first use), the checks before anything is
written, the audio cache and the DataLoaders."""
import functools
import os
from pathlib import Path

import torch
from lightning.fabric.utilities.seed import pl_worker_init_function
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, DistributedSampler

from dataset.audio_checks import scan_audio
from dataset.cache import AudioCache
from dataset.dcase25 import AudioDataset, resolve_dataset_dir
from dataset.impulse_responses import load_impulse_responses
from dataset.locking import exclusive
from dataset.validation import check_outside_dataset
from helpers.setup.console import rank_zero_print
from helpers.training.augmentation import check_augmentation_flags

DEFAULT_NUM_WORKERS = 8  # the organisers' --num_workers


def prepare_dataset_dir(args) -> Path:
    """The data folder of this run; with ``--demo`` the demo set is written first if it is not there
    (a demo set written earlier with other ``python -m dataset.demo`` options, the hard variant too, is
    kept; a folder holding an unfinished or outdated hard variant is refused, not replaced)."""
    if args.demo:
        from dataset.demo import demo_variant, is_complete, write_demo_dataset
        folder = Path(args.dataset_dir)
        # one process writes it; the others of a distributed run wait, then find it complete
        with exclusive(folder.parent / f".{folder.name}.lock"):
            if not is_complete(folder):
                write_demo_dataset(folder)
        if demo_variant(args.dataset_dir) != "default":
            rank_zero_print(f"--demo: {args.dataset_dir} holds the {demo_variant(args.dataset_dir)} variant of the "
                            "demo set (docs/demo_hard.md).")
    return resolve_dataset_dir(args.dataset_dir)


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@functools.cache  # say it once per run, not once per loader
def effective_num_workers(requested: int) -> int:
    cpus = available_cpus()
    if requested > cpus:
        rank_zero_print(f"--num_workers {requested} capped at {cpus}, the number of CPU cores available.")
        return cpus
    return requested


def trains_on_cpu(args) -> bool:
    return args.accelerator == "cpu" or (args.accelerator == "auto" and not torch.cuda.is_available())


def loader_workers(args, cache) -> int:
    """``--num_workers`` if given; else none for the audio cache read on a CPU, otherwise
    ``DEFAULT_NUM_WORKERS``; capped at the cores (why: docs/speed.md)."""
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
        rank_zero_print(line)
    return report


def check_augmentation(args):
    """Before training: the augmentation flags, and the DIR impulse responses read once (an empty
    folder, a file that cannot be decoded or a silent response ends the script here)."""
    check_augmentation_flags(args)
    if args.dir_p > 0:
        rate = input_sample_rate(args)
        responses, _ = load_impulse_responses(args.dir_dir, rate)
        rank_zero_print(f"DIR augmentation: {len(responses)} impulse responses from {args.dir_dir} (resampled to "
                        f"{rate} Hz, unit energy); clips of {', '.join(args.dir_devices)} convolved with probability "
                        f"{args.dir_p}.")
    elif args.dir_dir:
        rank_zero_print("--dir_dir is given but --dir_p is 0: no clip is convolved (DIR augmentation is off).")


def open_cache(args, dataset_dir, rows):
    """The audio cache holding ``rows`` (built on first use), or None without ``--cache_dir``."""
    if not args.cache_dir:
        return None
    check_outside_dataset(args.cache_dir, dataset_dir, "--cache_dir")
    workers = DEFAULT_NUM_WORKERS if args.num_workers is None else args.num_workers
    return AudioCache.open_or_build(args.cache_dir, dataset_dir, rows["filename"].tolist(), args.sample_rate,
                                    num_workers=effective_num_workers(workers))


def lower_priority_worker(worker_id: int) -> None:
    """DataLoader workers yield the CPU to the training process (docs/speed.md)."""
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
