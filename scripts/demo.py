"""The whole pipeline on the built-in demo set: stage 1, stage 2, evaluation-set predictions.

Extra flags are passed to both training scripts (e.g. ``--wandb_mode disabled``).
"""
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import train_base  # noqa: E402
import train_device_specific  # noqa: E402
from helpers.cli import build_parser  # noqa: E402


def main(extra):
    start = time.time()
    demo_dir = build_parser("base", "").parse_args(["--demo", *extra]).demo_dir
    print("=== Stage 1: the general model ===")
    general_run, _ = train_base.main(["--demo", *extra])
    print("\n=== Stage 2: one model per device ===")
    system_run, _ = train_device_specific.main(["--demo", "--ckpt_id", general_run, *extra])
    print("\n=== Predictions for the demo evaluation set ===")
    output_csv = train_device_specific.main(["--demo", "--ckpt_id", system_run, "--evaluate",
                                             "--eval_dir", str(Path(demo_dir) / "eval"), *extra])
    print(f"\nDemo finished in {(time.time() - start) / 60:.1f} min. "
          f"Stage-1 run {general_run}, stage-2 run {system_run}; predictions: {output_csv}")


if __name__ == "__main__":
    main(sys.argv[1:])
