"""Seeded training losses of a tiny stage-1 run, per training step.

The numbers stored in ``tests/test_augmentation.py`` were printed by this script; the test recomputes
them, so that moving code changes no random draw and no arithmetic. It uses only the pieces every
training run uses (flags, ``make_loader``, ``open_cache``, ``SceneClassifier``).

    python tests/seeded_losses.py [SETTING ...]     # prints the losses (default: of every setting)
"""
import json
import sys
import tempfile
from pathlib import Path

import lightning as L
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from dataset.dcase25 import training_rows  # noqa: E402
from dataset.demo import write_demo_dataset  # noqa: E402
from helpers.setup.data import input_sample_rate, make_loader, open_cache  # noqa: E402
from helpers.setup.flags import build_parser, parse_args  # noqa: E402
from helpers.training.builder import build_module  # noqa: E402

DEMO_SCALE = 0.05  # 80 training clips: 5 steps of 16 per epoch
# a narrow network and a small front end keep it fast; the augmentations are what is compared. The
# learning rate is 0: every step's loss then depends on the seeded network, the data and every random
# draw, but not on how the optimiser amplifies, step by step, the last bits in which CPUs' kernels differ
TINY = ["--n_epochs", "2", "--batch_size", "16", "--num_workers", "0", "--warmup_steps", "3", "--seed", "3",
        "--lr", "0",
        "--base_channels", "8", "--sample_rate", "16000", "--n_mels", "32", "--n_fft", "512", "--window_length", "400",
        "--hop_length", "320", "--freqm", "8"]
SETTINGS = {
    # the organisers' augmentations (roll 0.1 s, frequency masking, MixStyle p 0.4), data read in the
    # main process, where roll draws its shifts clip by clip
    "defaults": [],
    # the same with a DataLoader worker: not recorded, as roll draws its shifts from the main process's
    # generator where the organisers' code drew them in the worker
    "defaults_worker": ["--num_workers", "1"],
    # no roll; frequency and time masking and MixStyle on every batch; a worker; the audio cache
    "no_roll_worker_cache": ["--roll_sec", "0", "--timem", "20", "--mixstyle_p", "1.0", "--num_workers", "1",
                             "--cache_dir", "{cache}"],
}


class LossRecorder(L.Callback):
    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.losses.append(outputs["loss"].item())


def demo_dir(root) -> Path:
    return write_demo_dataset(Path(root) / "demo_data", scale=DEMO_SCALE)


def seeded_losses(dataset_dir, setting: str, cache_dir) -> list:
    """The training loss of every step of a seeded two-epoch run with ``SETTINGS[setting]``."""
    flags = [flag.format(cache=cache_dir) for flag in SETTINGS[setting]]
    args = parse_args(build_parser("base", ""), [*TINY, *flags])
    rows = training_rows(dataset_dir, Path(dataset_dir) / "split_setup")
    # the cache (if any) is built before seeding, as a run finds it: building it draws no random number, so
    # a run that builds the cache and one that finds it give the same losses
    cache = open_cache(args, dataset_dir, rows)
    L.seed_everything(args.seed, workers=True, verbose=False)
    loader = make_loader(dataset_dir, rows, args, train=True, cache=cache)
    module = build_module(vars(args), input_sample_rate=input_sample_rate(args))
    recorder = LossRecorder()
    trainer = L.Trainer(max_epochs=args.n_epochs, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, limit_val_batches=0, callbacks=[recorder])
    trainer.fit(module, loader)
    return recorder.losses


def main(names):
    torch.set_num_threads(2)  # as the tests run
    with tempfile.TemporaryDirectory() as root:
        dataset_dir = demo_dir(root)
        losses = {name: seeded_losses(dataset_dir, name, Path(root) / "cache") for name in names or SETTINGS}
    print(json.dumps(losses, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
