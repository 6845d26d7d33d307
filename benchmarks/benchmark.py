"""Throughput of the training and evaluation paths on the demo data (prints a table and ratios).

    python benchmarks/benchmark.py [--batch_size 64] [--accelerator cpu|gpu]

(a) training clips/s from in-memory 32 kHz tensors: front end + network, the ceiling;
(b) training clips/s through the project's full path from the data folder, audio cache on;
(c) training clips/s through the organisers' path: decode every file each epoch, resample in the step;
(d) evaluation clips/s of the grouped device container on a batch mixing all nine devices;
(e) the same batch one clip at a time in half precision, as the organisers' container does;
(f) seconds to test the whole demo test split (both systems' final test uses this path).
Targets: (b)/(a) >= 0.95, (b) >= (c), (d)/(e) >= 5. Also prints where a training step's time goes.
"""
import platform
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataset import dcase25  # noqa: E402
from dataset.demo import is_complete, write_demo_dataset  # noqa: E402
from helpers.cli import build_parser, parse_args  # noqa: E402
from helpers.experiment import available_cpus, make_loader, open_cache  # noqa: E402
from models.asc_module import SceneClassifier, round_parameters_to_fp16  # noqa: E402
from models.cp_mobile import Network  # noqa: E402
from models.multi_device import MultiDeviceModel  # noqa: E402


class StepTimer(L.Callback):
    """Wall time of the training batches after the first ``warmup`` ones (data loading included)."""

    def __init__(self, warmup):
        self.warmup, self.start, self.clips = warmup, None, 0

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == self.warmup:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if self.start is not None:
            self.clips += len(batch[1])
            self.end = time.perf_counter()

    @property
    def clips_per_second(self):
        return self.clips / (self.end - self.start)


def fit_throughput(args, dataset_dir, rows, cache, steps, warmup, accelerator):
    """Training clips/s of ``Trainer.fit`` on real loaders (the path the scripts take)."""
    module = SceneClassifier(vars(args), input_sample_rate=args.sample_rate if cache else None)
    timer = StepTimer(warmup)
    trainer = L.Trainer(max_steps=warmup + steps, accelerator=accelerator, devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[timer], limit_val_batches=0)
    trainer.fit(module, make_loader(dataset_dir, rows, args, train=True, cache=cache))
    return timer.clips_per_second


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def in_memory_throughput(args, waveforms, labels, steps, warmup, device, profile):
    """Training clips/s with the audio already in memory at 32 kHz; optionally the time per part."""
    module = SceneClassifier(vars(args), input_sample_rate=args.sample_rate).to(device).train()
    optimizer = torch.optim.AdamW(module.model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    parts = dict.fromkeys(["front end + augmentation", "forward", "backward", "optimizer"], 0.0)
    batch_size = args.batch_size
    clips, start = 0, None
    for step in range(warmup + steps):
        if step == warmup:
            synchronize(device)
            start = time.perf_counter()
            parts = dict.fromkeys(parts, 0.0)
        index = torch.randint(0, len(labels), (batch_size,))
        x, y = waveforms[index].to(device), labels[index].to(device)
        marks = [time.perf_counter()]
        features, mix = module.augment(x, ["a"] * batch_size, module.frontend)
        synchronize(device) if profile else None
        marks.append(time.perf_counter())
        loss = mix.cross_entropy(module.model(features), y)
        synchronize(device) if profile else None
        marks.append(time.perf_counter())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        synchronize(device) if profile else None
        marks.append(time.perf_counter())
        optimizer.step()
        synchronize(device) if profile else None
        marks.append(time.perf_counter())
        for name, (a, b) in zip(parts, zip(marks, marks[1:])):
            parts[name] += b - a
        clips += batch_size
    synchronize(device)
    return clips / (time.perf_counter() - start), parts


@torch.no_grad()
def evaluation_throughput(device, repeats=3):
    """(d) grouped container vs (e) one clip at a time in half precision, same mixed batch."""
    torch.manual_seed(0)
    system = MultiDeviceModel(Network(), dcase25.TRAIN_DEVICES).to(device).eval()
    devices = [dcase25.DEVICES[i % 9] for i in range(256)]
    features = torch.randn(len(devices), 1, 256, 65, device=device)
    grouped = round_parameters_to_fp16(system)
    dtype = next(grouped.parameters()).dtype
    grouped(features.half().to(dtype), devices)  # warm-up
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        grouped(features.half().to(dtype), devices)
    synchronize(device)
    grouped_rate = repeats * len(devices) / (time.perf_counter() - start)

    per_sample = system.half()  # the organisers' container: half precision, clip by clip
    n = 36 if device.type == "cpu" else 256  # half precision on a CPU is slow: fewer clips
    per_sample.get_model_for_device(devices[0])(features[:1].half())  # warm-up
    synchronize(device)
    start = time.perf_counter()
    for i in range(n):
        per_sample.get_model_for_device(devices[i])(features[i:i + 1].half())
    synchronize(device)
    return grouped_rate, n / (time.perf_counter() - start)


def test_split_seconds(args, dataset_dir, cache, accelerator):
    """(f) the final test of the device-specific system on the whole (demo) test split."""
    rows = dcase25.test_rows(dataset_dir, args.split_dir)
    system = MultiDeviceModel(Network(), dcase25.TRAIN_DEVICES)
    module = SceneClassifier(vars(args), model=system, input_sample_rate=args.sample_rate)
    trainer = L.Trainer(accelerator=accelerator, devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False)
    loader = make_loader(dataset_dir, rows, args, train=False, cache=cache)
    start = time.perf_counter()
    trainer.test(module, loader, verbose=False)
    return time.perf_counter() - start, len(rows)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{cpu}, {available_cpus()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads){gpu}"


def main():
    parser = build_parser("base", __doc__)
    own = parser.add_argument_group("benchmark")
    own.add_argument("--steps", type=int, default=20, help="measured training steps per path")
    own.add_argument("--warmup", type=int, default=3, help="unmeasured training steps before them")
    args = parse_args(parser, ["--demo", *sys.argv[1:]])
    if not is_complete(args.dataset_dir):
        write_demo_dataset(args.dataset_dir)
    dataset_dir = Path(args.dataset_dir)
    accelerator = args.accelerator if args.accelerator != "auto" else ("gpu" if torch.cuda.is_available() else "cpu")
    device = torch.device("cuda" if accelerator == "gpu" else "cpu")
    rows = dcase25.training_rows(dataset_dir, args.split_dir)

    with tempfile.TemporaryDirectory() as cache_dir:
        args.cache_dir = cache_dir
        start = time.perf_counter()
        cache = open_cache(args, dataset_dir, rows)
        build_seconds = time.perf_counter() - start
        test_cache = open_cache(args, dataset_dir, dcase25.test_rows(dataset_dir, args.split_dir))
        waveforms = torch.stack([cache.waveform(f) for f in rows["filename"]])
        labels = torch.tensor([dcase25.CLASSES.index(s) for s in rows["scene_label"]])
        mb_per_1000 = cache.array.nbytes / len(cache.files) * 1000 / 2**20

        a, _ = in_memory_throughput(args, waveforms, labels, args.steps, args.warmup, device, profile=False)
        b = fit_throughput(args, dataset_dir, rows, cache, args.steps, args.warmup, accelerator)
        args.cache_dir = None
        c = fit_throughput(args, dataset_dir, rows, None, args.steps, args.warmup, accelerator)
        args.cache_dir = cache_dir
        d, e = evaluation_throughput(device)
        f, n_test = test_split_seconds(args, dataset_dir, test_cache, accelerator)
        _, parts = in_memory_throughput(args, waveforms, labels, max(5, args.steps // 2), args.warmup, device,
                                        profile=True)

    print(f"\nMachine: {machine()}; batch size {args.batch_size}, {args.steps} measured steps per path")
    print(f"Audio cache: {mb_per_1000:.1f} MB per 1,000 clips (built in {build_seconds:.1f} s for {len(rows)} clips)\n")
    print("| measure | value |\n|---|---:|")
    print(f"| (a) training, in-memory 32 kHz tensors (ceiling) | {a:.1f} clips/s |")
    print(f"| (b) training, project path from the data folder, cache on | {b:.1f} clips/s |")
    print(f"| (c) training, organisers' path (decode + resample every epoch) | {c:.1f} clips/s |")
    print(f"| (d) evaluation, grouped container, 9 devices mixed | {d:.1f} clips/s |")
    print(f"| (e) evaluation, one clip at a time in half precision | {e:.1f} clips/s |")
    print(f"| (f) final test of the demo test split ({n_test} clips) | {f:.1f} s ({n_test / f:.0f} clips/s) |")
    print(f"\n(b)/(a) = {b / a:.3f} (target >= 0.95)   (b)/(c) = {b / c:.2f} (target >= 1)   "
          f"(d)/(e) = {d / e:.1f} (target >= 5)")
    total = sum(parts.values())
    print("\nWhere a training step's time goes (in-memory path): "
          + ", ".join(f"{name} {100 * t / total:.0f} %" for name, t in parts.items()))


if __name__ == "__main__":
    main()
