"""Throughput of the training and evaluation paths on the demo data (prints a table and ratios).

    python benchmarks/benchmark.py [--batch_size 64] [--accelerator cpu|gpu] [--ckpt_id RUN]

(a) training clips/s from in-memory 32 kHz tensors: front end + network, the ceiling;
(b) training clips/s through the project's full path from the data folder, audio cache on;
(c) training clips/s through the organisers' path: decode every file each epoch, resample in the step;
(d) evaluation clips/s of the grouped device container on a batch mixing all nine devices, computed
    as evaluation computes it (models/inference.py: on a CPU a copy of each network made for speed, in
    32 bits on a CPU, half precision on a GPU); (d') the same in the other arithmetic; (d'') the networks
    themselves in the chosen dtype, whole groups at once (without those copies);
(e) the same batch one clip at a time in half precision, as the organisers' container does;
(f) seconds to test the whole demo test split (both systems' final test uses this path).
(a), (b) and (c) are the batch size over the median time of a training step (full batches; for (b)
and (c) from the end of one batch to the end of the next, fetching included). (a) and (b) run
interleaved, one step of each in turn, so that both see the same load: on a shared machine it
changes from one second to the next, and the median leaves out the steps it slowed down. (d) to (e)
are the fastest of repeated runs, for the same reason.
Targets: (b)/(a) >= 0.95, (b) >= (c), (d)/(e) >= 5. Also prints the machine, where a training step's
time goes in the in-memory loop and in Trainer.fit (Lightning's profiler), and the agreement of the
predicted classes with the organisers' half precision on the demo test split (of --ckpt_id's system,
else of a freshly initialised one).
"""
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
from lightning.pytorch.profilers import SimpleProfiler

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.evaluation_throughput import (  # noqa: E402
    agreement,
    arithmetic_names,
    evaluation_throughput,
    test_split_seconds,
)
from benchmarks.training_throughput import InMemoryLoop, clips_per_second, fit_parts, fit_steps  # noqa: E402

from dataset import dcase25  # noqa: E402
from dataset.demo import is_complete, write_demo_dataset  # noqa: E402
from helpers.setup.data import available_cpus, loader_workers, open_cache  # noqa: E402
from helpers.setup.flags import build_parser, parse_args  # noqa: E402
from models.frontend import LogMelFrontEnd  # noqa: E402


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
    own.add_argument("--steps", type=int, default=60, help="measured training steps per path")
    own.add_argument("--warmup", type=int, default=3, help="unmeasured training steps before them")
    own.add_argument("--ckpt_id", help="stage-2 run id or .ckpt path whose predicted classes are compared with half "
                                       "precision (default: a freshly initialised system)")
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

        # (a) and (b) step by step, interleaved in one fit (see StepTimer)
        timer = fit_steps(args, dataset_dir, rows, cache, args.steps, args.warmup, accelerator,
                          interleaved=InMemoryLoop(args, waveforms, labels, device))
        a_steps, b_steps = timer.interleaved_seconds, timer.seconds
        a, b = clips_per_second(args, a_steps), clips_per_second(args, b_steps)
        args.cache_dir = None
        organisers = fit_steps(args, dataset_dir, rows, None, args.steps, args.warmup, accelerator)
        c = clips_per_second(args, organisers.seconds)
        args.cache_dir = cache_dir
        input_shape = LogMelFrontEnd(sample_rate=args.sample_rate).input_shape()
        rates, e, half = evaluation_throughput(device, input_shape)
        same, widest, n_agree, agreement_half = agreement(args, dataset_dir, test_cache, device)
        f, n_test = test_split_seconds(args, dataset_dir, test_cache, accelerator)
        steps = max(5, args.steps // 4)
        loop = InMemoryLoop(args, waveforms, labels, device)
        for step in range(args.warmup + steps):
            if step == args.warmup:
                loop.parts = dict.fromkeys(loop.parts, 0.0)  # the warm-up steps are not counted
            loop.step(profile=True)
        parts = loop.parts
        profiler = SimpleProfiler(dirpath=cache_dir, filename="fit_profile")  # its report goes to that file
        fit_steps(args, dataset_dir, rows, cache, steps, args.warmup, accelerator, profiler=profiler)

    d = rates["chosen"]
    print(f"\nMachine: {machine()}; batch size {args.batch_size}, {loader_workers(args, cache)} loader workers; "
          f"(a) and (b) interleaved step by step over {args.steps} steps, clips/s from the median step time")
    spread = lambda seconds: f"{1000 * min(seconds):.0f}-{1000 * max(seconds):.0f} ms"  # noqa: E731
    print(f"Steps of full batches: (a) {len(a_steps)}, {spread(a_steps)}; (b) {len(b_steps)}, {spread(b_steps)}")
    print(f"Audio cache: {mb_per_1000:.1f} MB per 1,000 clips (built in {build_seconds:.1f} s for {len(rows)} clips)\n")
    print("| measure | value |\n|---|---:|")
    print(f"| (a) training, in-memory 32 kHz tensors (ceiling) | {a:.1f} clips/s |")
    print(f"| (b) training, project path from the data folder, cache on | {b:.1f} clips/s |")
    print(f"| (c) training, organisers' path (decode + resample every epoch) | {c:.1f} clips/s |")
    chosen, other = arithmetic_names(half)
    made = "copies made for speed, " if device.type == "cpu" else ""
    print(f"| (d) evaluation, grouped container, 9 devices mixed, {made}in {chosen} | {d:.1f} clips/s |")
    print(f"| (d') the same in {other} | {rates['other']:.1f} clips/s |")
    print(f"| (d'') the same, the networks themselves in {chosen}, whole groups | {rates['plain']:.1f} clips/s |")
    print(f"| (e) evaluation, one clip at a time in half precision | {e:.1f} clips/s |")
    print(f"| (f) final test of the demo test split ({n_test} clips) | {f:.1f} s ({n_test / f:.0f} clips/s) |")
    print(f"\n(b)/(a) = {b / a:.3f} (target >= 0.95)   (b)/(c) = {b / c:.2f} (target >= 1)   "
          f"(d)/(e) = {d / e:.1f} (target >= 5)")
    system = f"system {args.ckpt_id}" if args.ckpt_id else "freshly initialised system (seed 0)"
    print(f"\nPredicted classes on the demo test split ({system}), against the networks themselves in half precision:")
    agreement_chosen, agreement_other = arithmetic_names(agreement_half)
    for name, label in (("chosen", f"{agreement_chosen} (chosen)"), ("other", agreement_other)):
        print(f"  {label}: {same[name]} of {n_agree} the same ({100 * same[name] / n_agree:.2f} %)"
              + (f"; where they differ, the two best logits lie at most {widest[name]:.2g} apart"
                 if same[name] < n_agree else ""))
    total = sum(parts.values())
    print("\nWhere a training step's time goes, in-memory loop: "
          + ", ".join(f"{name} {1000 * t / steps:.0f} ms ({100 * t / total:.0f} %)" for name, t in parts.items()))
    fit = fit_parts(profiler)
    print("Trainer.fit, project path (Lightning's profiler): "
          f"fetching the batch {fit['data']:.1f} ms, training_step (augmentation, forward, loss, logging) "
          f"{fit['training_step']:.0f} ms, backward {fit['backward']:.0f} ms, optimizer and scheduler "
          f"{fit['optimizer']:.1f} ms, Lightning's loop and hooks {fit['loop']:.1f} ms; "
          f"{sum(fit.values()):.0f} ms per step vs {1000 * total / steps:.0f} ms in the in-memory loop")


if __name__ == "__main__":
    main()
