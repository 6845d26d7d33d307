"""How fast this repository trains on the GPU at hand, as a Markdown report (``bash scripts/gpu_check.sh``
runs it after the GPU tier; docs/gpu.md explains the figures).

    python benchmarks/gpu_report.py --out gpu_report.md [--tier_summary "N passed ..."]

The card, torch and CUDA; CP-Mobile training steps at batch 256 in 32, 16-mixed and bf16-mixed (step time,
clips/s, achieved TFLOP/s of the network against the card's peak); the data path's clips/s from the audio
cache against the step's; the projected minutes of the stage-1 and stage-2 recipes; a PaSST teacher step at
batch 80 (time, peak memory, projected hours of the teacher recipe). Training steps are
``SceneClassifier.training_loss``, backward and AdamW, timed with CUDA events after a warm-up.
"""
import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataset.dcase25 import training_rows  # noqa: E402
from helpers.outputs.complexity import model_complexity  # noqa: E402
from helpers.setup.data import make_loader, open_cache, prepare_dataset_dir  # noqa: E402
from helpers.setup.flags import build_parser, parse_args  # noqa: E402
from helpers.training.builder import build_module  # noqa: E402
from models.registry import NetworkError  # noqa: E402

SPLIT_25_CLIPS, TEST_CLIPS = 34_900, 29_680  # the published split sizes (training, test)
# dense peak TFLOP/s by card name: (float32 without tensor cores, TF32, 16-bit) from the makers' data sheets
PEAK_TFLOPS = {"H200": (67, 495, 989), "H100 SXM": (67, 495, 989), "H100 PCIe": (51, 378, 756),
               "H100": (67, 495, 989), "A100": (19.5, 156, 312), "L40S": (91.6, 183, 362), "L4": (30.3, 60, 121),
               "A10": (31.2, 62.5, 125), "V100": (15.7, None, 125), "RTX 4090": (82.6, 82.6, 165),
               "RTX 3090": (35.6, 35.6, 71)}
PRECISIONS = {"32": None, "16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}


def peak_of(name: str):
    """``(fp32, tf32, 16-bit)`` peak TFLOP/s of the card called ``name``, or None for a card not in the table."""
    return next((peak for key, peak in PEAK_TFLOPS.items() if key in name), None)


def args_for(*argv):
    return parse_args(build_parser("base", ""), ["--demo", *argv])


def synthetic_batch(size: int, device):
    waveform = 0.1 * torch.randn(size, 1, 44100, device=device)
    labels = torch.arange(size, device=device) % 10
    return waveform, labels, ["a", "b", "c", "s1"] * (size // 4), [f"audio/{i}.wav" for i in range(size)]


def step_seconds(module, size: int, dtype, steps: int = 20, warmup: int = 5) -> float:
    """Seconds of one training step (loss, backward, AdamW) at batch ``size`` under autocast ``dtype``."""
    device = torch.device("cuda")
    module = module.to(device).train()
    module.prepare_to_fit(device)
    optimizer = torch.optim.AdamW(module.model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    data = synthetic_batch(size, device)

    def step():
        with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            loss, _ = module.training_loss(data)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    for _ in range(warmup):
        step()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(steps):
        step()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1000 / steps


def data_clips_per_second(args, batches: int = 30) -> float:
    """Clips per second the training loader delivers from the audio cache (``--cache_dir``), on the CPU side."""
    dataset_dir = prepare_dataset_dir(args)
    rows = training_rows(dataset_dir, args.split_dir, args.subset)
    loader = make_loader(dataset_dir, rows, args, True, cache=open_cache(args, dataset_dir, rows))
    seen, started, it = 0, None, iter(loader)
    for i in range(batches + 1):
        try:
            waveform = next(it)[0]
        except StopIteration:  # a small data set: start the next epoch
            it = iter(loader)
            waveform = next(it)[0]
        if i == 0:  # workers started, first batch in
            started = time.perf_counter()
        else:
            seen += len(waveform)
    return seen / (time.perf_counter() - started)


def projected_minutes(clips_per_second: float, epochs: int, validations: int) -> float:
    """A recipe's minutes: ``epochs`` over the 25 % split, plus ``validations`` forward passes over the
    test split (a forward pass taken as a third of a training step)."""
    return (epochs * SPLIT_25_CLIPS + validations * TEST_CLIPS / 3) / clips_per_second / 60


def cp_mobile_rows(cache_dir: str) -> tuple:
    """The CP-Mobile table rows and the fastest clips/s."""
    macs = model_complexity(build_module(vars(args_for())).model)["macs"]
    name = torch.cuda.get_device_name()
    peak = peak_of(name)
    rows, best = [], 0.0
    for precision, dtype in PRECISIONS.items():
        seconds = step_seconds(build_module(vars(args_for()), input_sample_rate=44100), 256, dtype)
        rate = 256 / seconds
        best = max(best, rate)
        tflops = 6 * macs * 256 / seconds / 1e12  # forward 2 FLOPs per MAC, backward twice the forward
        # in 32-bit runs cuDNN's convolutions use TF32 where the card has it (torch's default)
        reference = None if peak is None else (peak[1] or peak[0]) if dtype is None else peak[2]
        share = "peak unknown" if reference is None else f"{tflops / reference:.1%} of {reference:g}"
        rows.append(f"| {precision} | {seconds * 1000:.1f} | {rate:,.0f} | {tflops:.2f} ({share}) |")
    return rows, best, macs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="gpu_report.md", help="the report's file")
    parser.add_argument("--cache_dir", default="cache", help="the audio cache to read the demo set from")
    parser.add_argument("--tier_summary", default=None, help="the GPU tier's closing line, quoted in the report")
    options = parser.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("No CUDA GPU: nothing to measure (no report written).")
    name = torch.cuda.get_device_name()
    lines = [f"# GPU report: {name}", "",
             f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, "
             f"{torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB, {time.strftime('%Y-%m-%d')}", ""]
    if options.tier_summary:
        lines += [f"GPU tier (tests/test_gpu.py): {options.tier_summary}", ""]
    rows, best, macs = cp_mobile_rows(options.cache_dir)
    lines += [f"## CP-Mobile training, batch 256 ({macs:,} MACs per clip)", "",
              "| precision | step (ms) | clips/s | achieved TFLOP/s (of the card's dense peak) |",
              "|---|---:|---:|---|", *rows, ""]
    data_rate = data_clips_per_second(args_for("--cache_dir", options.cache_dir, "--batch_size", "256"))
    rate = min(best, data_rate)
    lines += [f"Data path from the audio cache: {data_rate:,.0f} clips/s (the fastest step: {best:,.0f} clips/s): "
              f"{'the GPU' if best < data_rate else 'the data path'} sets the pace.", "",
              "| recipe | projected minutes |", "|---|---:|",
              f"| stage 1 (150 epochs of the 25 % split, 15 validations) | {projected_minutes(rate, 150, 15):.0f} |",
              f"| stage 2 (50 epochs per device over the same clips, 5 validations each) | "
              f"{projected_minutes(rate, 50, 5):.0f} |", ""]
    try:
        teacher = build_module(vars(args_for("--model", "passt", "--pretrained", "none")))
        torch.cuda.reset_peak_memory_stats()
        seconds = step_seconds(teacher, 80, torch.bfloat16, steps=5, warmup=2)
        memory = torch.cuda.max_memory_allocated() / 2**30
        hours = 25 * SPLIT_25_CLIPS / (80 / seconds) / 3600
        lines += ["## PaSST teacher, batch 80, bf16-mixed", "",
                  f"Step {seconds * 1000:.0f} ms, peak GPU memory {memory:.1f} GiB; the teacher recipe (25 epochs "
                  f"of the 25 % split) about {hours:.1f} hours of training steps.", ""]
    except NetworkError as err:  # hear21passt not installed
        lines += ["## PaSST teacher", "", f"Not measured: {err}", ""]
    Path(options.out).write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"Written to {options.out}")


if __name__ == "__main__":
    main()
