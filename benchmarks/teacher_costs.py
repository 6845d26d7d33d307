"""What the PaSST teacher costs on this machine: a training step (front end, forward, backward, AdamW) at a
small batch and at the recipe's batch of 80, the peak memory, the teacher logits of 1,000 clips, and from the
measured step time the hours of the published recipe on the 25 % split:

    python benchmarks/teacher_costs.py                        # CPU, or the GPU when there is one
    python benchmarks/teacher_costs.py --precision bf16-mixed --clips 1000

Random weights and random audio (the figures do not depend on either). Prints the machine first.
"""
import argparse
import math
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.registry import build_frontend, build_network  # noqa: E402

SPLIT25_CLIPS = 35_000  # about; --split25 counts the rows of the organisers' split25.csv
RECIPE = {"epochs": 25, "batch_size": 80}  # the published PaSST teacher recipes (docs/passt.md)


def machine(device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor()) if Path("/proc/cpuinfo").is_file() else platform.processor()
    return f"{cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_seconds(network, frontend, batch_size, steps, device, autocast) -> list:
    """Seconds of each training step after one untimed step."""
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-5)
    labels = torch.randint(10, (batch_size,), device=device)
    times = []
    for step in range(steps + 1):
        audio = 0.1 * torch.randn(batch_size, 1, 44100, device=device)
        synchronize(device)
        start = time.perf_counter()
        with autocast:
            loss = torch.nn.functional.cross_entropy(network(frontend(audio)), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize(device)
        if step:
            times.append(time.perf_counter() - start)
    return times


@torch.no_grad()
def logits_seconds(network, frontend, clips, batch_size, device, autocast) -> float:
    network.eval(), frontend.eval()
    synchronize(device)
    start = time.perf_counter()
    for first in range(0, clips, batch_size):
        audio = 0.1 * torch.randn(min(batch_size, clips - first), 1, 44100, device=device)
        with autocast:
            network(frontend(audio)).float().cpu()
    synchronize(device)
    network.train(), frontend.train()
    return time.perf_counter() - start


def peak_memory(device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB of GPU memory (torch's peak allocation)"
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GiB (peak resident size of the process)"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--batch_size", type=int, default=4, help="the small batch")
    parser.add_argument("--steps", type=int, default=5, help="timed steps at the small batch")
    parser.add_argument("--recipe_steps", type=int, default=2, help="timed steps at the recipe's batch of 80")
    parser.add_argument("--clips", type=int, default=1000, help="clips of the teacher-logits measurement")
    parser.add_argument("--precision", choices=["32", "bf16-mixed", "16-mixed"], default="32")
    parser.add_argument("--split25", default=None, help="split25.csv, for the exact number of training clips")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(args.precision)
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)
    print(f"Machine: {machine(device)}; precision {args.precision}")

    torch.manual_seed(0)
    network = build_network("passt", {"pretrained": "none"}).to(device).train()
    frontend = build_frontend("passt", {}, 44100).to(device).train()
    small = step_seconds(network, frontend, args.batch_size, args.steps, device, autocast)
    print(f"training step, batch {args.batch_size}: median {statistics.median(small):.2f} s "
          f"(min {min(small):.2f}, max {max(small):.2f}, {len(small)} steps)")
    recipe = step_seconds(network, frontend, RECIPE["batch_size"], args.recipe_steps, device, autocast)
    per_step = statistics.median(recipe)
    print(f"training step, batch {RECIPE['batch_size']}: median {per_step:.2f} s ({len(recipe)} steps)")
    print(f"peak memory: {peak_memory(device)}")
    seconds = logits_seconds(network, frontend, args.clips, 64, device, autocast)
    print(f"teacher logits of {args.clips} clips (batches of 64): {seconds:.1f} s, {args.clips / seconds:.1f} clips/s")
    clips = sum(1 for _ in open(args.split25)) - 1 if args.split25 else SPLIT25_CLIPS
    steps = RECIPE["epochs"] * math.ceil(clips / RECIPE["batch_size"])
    about = "" if args.split25 else "about "
    print(f"the recipe on the 25 % split ({RECIPE['epochs']} epochs of {about}{clips:,} clips, batch "
          f"{RECIPE['batch_size']}: {steps:,} steps) at {per_step:.2f} s a step: {steps * per_step / 3600:.1f} hours "
          "of training, validation not counted")


if __name__ == "__main__":
    main()
