"""Throughput of the training and evaluation paths on the demo data (prints a table and ratios).

    python benchmarks/benchmark.py [--batch_size 64] [--accelerator cpu|gpu]

(a) training clips/s from in-memory 32 kHz tensors: front end + network, the ceiling;
(b) training clips/s through the project's full path from the data folder, audio cache on;
(c) training clips/s through the organisers' path: decode every file each epoch, resample in the step;
(d) evaluation clips/s of the grouped device container on a batch mixing all nine devices, in the
    arithmetic chosen for this machine (models/arithmetic.py); (d') the same in the other one;
(e) the same batch one clip at a time in half precision, as the organisers' container does;
(f) seconds to test the whole demo test split (both systems' final test uses this path).
(a) and (b) alternate for --rounds rounds and the best of each counts (other load only slows a run).
Targets: (b)/(a) >= 0.95, (b) >= (c), (d)/(e) >= 5. Also prints the machine, the agreement of the
predicted classes between the two arithmetics on the demo test split, and where a training step's
time goes.
"""
import copy
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
from helpers.experiment import available_cpus, loader_workers, make_loader, open_cache  # noqa: E402
from models.asc_module import SceneClassifier, round_parameters_to_fp16  # noqa: E402
from models.cp_mobile import Network  # noqa: E402
from models.frontend import LogMelFrontEnd  # noqa: E402
from models.multi_device import MultiDeviceModel  # noqa: E402
from models.quantization import compute_dtype  # noqa: E402


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
            clips = 0  # the warm-up steps are not timed, so their clips do not count
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


def grouped_rate(system, features, devices, dtype, device, repeats=3):
    """Clips/s of the grouped device container on ``features`` (16-bit values) computed in ``dtype``."""
    inputs = features.half().to(dtype)
    system(inputs, devices)  # warm-up
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        system(inputs, devices)
    synchronize(device)
    return repeats * len(devices) / (time.perf_counter() - start)


@torch.no_grad()
def evaluation_throughput(device, input_shape):
    """(d) the grouped container in the arithmetic chosen for this machine (and both arithmetics on
    their own) vs (e) one clip at a time in half precision, on the same batch mixing all nine devices."""
    torch.manual_seed(0)
    system = MultiDeviceModel(Network(), dcase25.TRAIN_DEVICES).to(device).eval()
    devices = [dcase25.DEVICES[i % 9] for i in range(256)]
    features = torch.randn(len(devices), *input_shape[1:], device=device)
    rates = {dtype: grouped_rate(copy.deepcopy(system).to(dtype), features, devices, dtype, device)
             for dtype in (torch.float16, torch.float32)}
    chosen = compute_dtype(round_parameters_to_fp16(copy.deepcopy(system), input_shape))

    per_sample = system.half()  # the organisers' container: half precision, clip by clip
    n = 36 if device.type == "cpu" else 256  # half precision on a CPU can be slow: fewer clips
    per_sample.get_model_for_device(devices[0])(features[:1].half())  # warm-up
    synchronize(device)
    start = time.perf_counter()
    for i in range(n):
        per_sample.get_model_for_device(devices[i])(features[i:i + 1].half())
    synchronize(device)
    return rates[chosen], n / (time.perf_counter() - start), rates, chosen


@torch.no_grad()
def arithmetic_agreement(args, dataset_dir, cache, device):
    """Share of the demo test split whose predicted class is the same with the grouped container
    computing in half precision and in 32 bits on the same 16-bit parameters and features (a freshly
    initialised network, seed 0: its logits lie close together, so this is a hard case)."""
    rows = dcase25.test_rows(dataset_dir, args.split_dir)
    torch.manual_seed(0)
    system = MultiDeviceModel(Network(), dcase25.TRAIN_DEVICES).half().to(device).eval()
    frontend = LogMelFrontEnd(orig_sample_rate=args.sample_rate, sample_rate=args.sample_rate).to(device)
    same, widest = 0, 0.0
    for start in range(0, len(rows), 256):
        part = rows.iloc[start:start + 256]
        waveform = cache.waveforms(part["filename"].tolist()).to(device)
        features = frontend(waveform).half()
        devices = part["source_label"].tolist()
        half = system(features, devices).argmax(1)
        logits = copy.deepcopy(system).float()(features.float(), devices)
        differ = half != logits.argmax(1)
        same += int((~differ).sum())
        if differ.any():  # how close the two best 32-bit logits were where the classes differ
            top2 = logits[differ].float().topk(2, dim=1).values
            widest = max(widest, float((top2[:, 0] - top2[:, 1]).max()))
    return same, len(rows), widest


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
    own.add_argument("--rounds", type=int, default=3, help="alternating rounds of (a) and (b); the best of each counts")
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

        # (a) and (b) alternate, the best of each counts: other load on the machine only slows a run down
        a_rounds, b_rounds = [], []
        for _ in range(args.rounds):
            a_rounds.append(in_memory_throughput(args, waveforms, labels, args.steps, args.warmup, device,
                                                 profile=False)[0])
            b_rounds.append(fit_throughput(args, dataset_dir, rows, cache, args.steps, args.warmup, accelerator))
        a, b = max(a_rounds), max(b_rounds)
        args.cache_dir = None
        c = fit_throughput(args, dataset_dir, rows, None, args.steps, args.warmup, accelerator)
        args.cache_dir = cache_dir
        input_shape = LogMelFrontEnd(sample_rate=args.sample_rate).input_shape()
        d, e, rates, chosen = evaluation_throughput(device, input_shape)
        same, n_agree, widest = arithmetic_agreement(args, dataset_dir, test_cache, device)
        f, n_test = test_split_seconds(args, dataset_dir, test_cache, accelerator)
        _, parts = in_memory_throughput(args, waveforms, labels, max(5, args.steps // 2), args.warmup, device,
                                        profile=True)

    print(f"\nMachine: {machine()}; batch size {args.batch_size}, {loader_workers(args, cache)} loader workers, "
          f"{args.steps} measured steps per path, best of {args.rounds} rounds for (a) and (b)")
    print("Rounds (clips/s): (a) " + ", ".join(f"{x:.1f}" for x in a_rounds)
          + "; (b) " + ", ".join(f"{x:.1f}" for x in b_rounds))
    print(f"Audio cache: {mb_per_1000:.1f} MB per 1,000 clips (built in {build_seconds:.1f} s for {len(rows)} clips)\n")
    print("| measure | value |\n|---|---:|")
    print(f"| (a) training, in-memory 32 kHz tensors (ceiling) | {a:.1f} clips/s |")
    print(f"| (b) training, project path from the data folder, cache on | {b:.1f} clips/s |")
    print(f"| (c) training, organisers' path (decode + resample every epoch) | {c:.1f} clips/s |")
    name = {torch.float16: "half precision", torch.float32: "32 bits on the 16-bit values"}
    print(f"| (d) evaluation, grouped container, 9 devices mixed, in {name[chosen]} (chosen here) | {d:.1f} clips/s |")
    other = torch.float32 if chosen == torch.float16 else torch.float16
    print(f"| (d') the same in {name[other]} (not chosen) | {rates[other]:.1f} clips/s |")
    print(f"| (e) evaluation, one clip at a time in half precision | {e:.1f} clips/s |")
    print(f"| (f) final test of the demo test split ({n_test} clips) | {f:.1f} s ({n_test / f:.0f} clips/s) |")
    print(f"\n(b)/(a) = {b / a:.3f} (target >= 0.95)   (b)/(c) = {b / c:.2f} (target >= 1)   "
          f"(d)/(e) = {d / e:.1f} (target >= 5)")
    print(f"Predicted classes on the demo test split, grouped container in half precision vs 32 bits: "
          f"{same} of {n_agree} the same ({100 * same / n_agree:.2f} %)"
          + (f"; where they differ, the two best logits lie at most {widest:.2g} apart" if same < n_agree else ""))
    total = sum(parts.values())
    print("\nWhere a training step's time goes (in-memory path): "
          + ", ".join(f"{name} {100 * t / total:.0f} %" for name, t in parts.items()))


if __name__ == "__main__":
    main()
