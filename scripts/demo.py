"""The whole pipeline on the built-in demo set: stage 1, stage 2, evaluation-set predictions, and the
exported submission package (``submissions/Demo_DEMO_task1/``, index 1).

Extra flags are passed to both training scripts (e.g. ``--wandb_mode disabled``).
"""
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import train_base  # noqa: E402
import train_device_specific  # noqa: E402
from helpers.outputs.submission import export_submission  # noqa: E402
from helpers.setup.console import run_cli  # noqa: E402
from helpers.setup.flags import parse_args, stage1_parser  # noqa: E402


def main(extra):
    start = time.time()
    flags = parse_args(stage1_parser(""), ["--demo", *extra])
    demo_dir = flags.demo_dir
    print("=== Stage 1: the general model ===")
    general_run, _ = train_base.main(["--demo", *extra])
    print("\n=== Stage 2: one model per device ===")
    system_run, _ = train_device_specific.main(["--demo", "--ckpt_id", general_run, *extra])
    print("\n=== Predictions for the demo evaluation set ===")
    output_csv = train_device_specific.main(["--demo", "--ckpt_id", system_run, "--evaluate",
                                             "--eval_dir", str(Path(demo_dir) / "eval"), *extra])
    print("\n=== Submission package (the organisers' 2025 inference interface) ===")
    package_dir = export_submission(system_run, "Demo_DEMO_task1", 1, out_dir="submissions",
                                    project_name=flags.project_name, overwrite=True)
    print(f"\nDemo finished in {(time.time() - start) / 60:.1f} min. "
          f"Stage-1 run {general_run}, stage-2 run {system_run}; predictions: {output_csv}; "
          f"submission package: {package_dir.resolve()} (see docs/submission.md)")


if __name__ == "__main__":
    run_cli(lambda: main(sys.argv[1:]))
