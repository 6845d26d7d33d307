"""Training throughput for ``benchmarks/benchmark.py``: steps of an in-memory loop (front end and network
only) and of ``Trainer.fit`` on the project's loaders, timed step by step; where a step's time goes."""
import statistics
import time

import lightning as L
import torch
from lightning.pytorch.profilers import SimpleProfiler

from helpers.setup.data import make_loader
from helpers.training.builder import build_module


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


class InMemoryLoop:
    """Training steps with the audio already in memory at 32 kHz: front end + network, nothing else."""

    PARTS = ("loss (augmentation, front end, network)", "backward", "optimizer")

    def __init__(self, args, waveforms, labels, device):
        self.module = build_module(vars(args), input_sample_rate=args.sample_rate).to(device).train()
        self.module.prepare_to_fit(device)  # as Trainer.fit does: the memory format the training runs in
        self.optimizer = torch.optim.AdamW(self.module.model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
        self.waveforms, self.labels, self.device, self.batch_size = waveforms, labels, device, args.batch_size
        self.parts = dict.fromkeys(self.PARTS, 0.0)  # seconds of each part, summed over the steps

    def step(self, profile=False) -> float:
        """One training step (``SceneClassifier.training_loss``, backward, AdamW); its seconds."""
        device, batch_size = self.device, self.batch_size
        synchronize(device)
        marks = [time.perf_counter()]
        index = torch.randint(0, len(self.labels), (batch_size,))
        batch = (self.waveforms[index].to(device), self.labels[index].to(device), ["a"] * batch_size,
                 [f"{i}.wav" for i in index.tolist()])
        loss, _ = self.module.training_loss(batch)
        synchronize(device) if profile else None
        marks.append(time.perf_counter())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        synchronize(device) if profile else None
        marks.append(time.perf_counter())
        self.optimizer.step()
        synchronize(device)
        marks.append(time.perf_counter())
        for name, (a, b) in zip(self.PARTS, zip(marks, marks[1:])):
            self.parts[name] += b - a
        return marks[-1] - marks[0]


class StepTimer(L.Callback):
    """Seconds of the training steps of ``Trainer.fit`` after the first ``warmup`` ones, from the end of
    one batch to the end of the next (fetching the batch and Lightning's loop included), full batches
    only (an epoch's last batch can be smaller). With ``interleaved`` (an ``InMemoryLoop``) one of its
    steps runs, timed on its own, after each step of the fit: both paths measured step by step under
    the same load, which on a shared machine changes from one second to the next."""

    def __init__(self, warmup, batch_size, device, interleaved=None):
        self.warmup, self.batch_size, self.device, self.interleaved = warmup, batch_size, device, interleaved
        self.seconds, self.interleaved_seconds, self.last = [], [], None

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        synchronize(self.device)
        now = time.perf_counter()
        if self.last is not None and trainer.global_step > self.warmup and len(batch[1]) == self.batch_size:
            self.seconds.append(now - self.last)
        if self.interleaved is not None:
            seconds = self.interleaved.step()
            if trainer.global_step > self.warmup:
                self.interleaved_seconds.append(seconds)
        self.last = time.perf_counter()


def fit_steps(args, dataset_dir, rows, cache, steps, warmup, accelerator, interleaved=None, profiler=None):
    """The ``StepTimer`` of ``Trainer.fit`` on real loaders (the path the scripts take)."""
    module = build_module(vars(args), input_sample_rate=args.sample_rate if cache else None)
    timer = StepTimer(warmup, args.batch_size, torch.device("cuda" if accelerator == "gpu" else "cpu"), interleaved)
    trainer = L.Trainer(max_steps=warmup + steps, accelerator=accelerator, devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[timer], limit_val_batches=0, profiler=profiler)
    trainer.fit(module, make_loader(dataset_dir, rows, args, train=True, cache=cache))
    return timer


def fit_parts(profiler: SimpleProfiler) -> dict:
    """Milliseconds per training step in ``Trainer.fit`` by part, from Lightning's profiler."""
    def mean_ms(suffix, prefix=""):
        durations = next(v for name, v in profiler.recorded_durations.items()
                         if name.startswith(prefix) and name.endswith(suffix))
        return 1000 * sum(durations) / len(durations)
    batch, step = mean_ms("run_training_batch"), mean_ms(".optimizer_step", "[LightningModule]")
    forward, backward = mean_ms(".training_step", "[Strategy]"), mean_ms(".backward", "[Strategy]")
    return {"data": mean_ms("train_dataloader_next"), "training_step": forward, "backward": backward,
            "optimizer": step - forward - backward, "loop": batch - step}


def clips_per_second(args, step_seconds) -> float:
    return args.batch_size / statistics.median(step_seconds)
