"""What the README's commands leave at the repository root (``wandb/``, run folders, predictions, exported
packages, caches) changes nothing that the linter or the tests see: in a copy of the repository holding them, the
linter passes, a test runs, and ``import wandb`` is the installed package.
"""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# what the README's commands leave at the root; the .py files have lint errors of their own, as a copied
# package or saved code could
RUN_LEFTOVERS = {
    "wandb/debug.log": "",
    "wandb/offline-run-20250101_000000-abc123/run-abc123.wandb": "",
    "wandb/offline-run-20250101_000000-abc123/files/code/train_base.py": "import sys\nimport os\n",
    "DCASE25_Task1/abc123/checkpoints/last.ckpt": "",
    "DCASE25_Task1/abc123/results.md": "",
    "lightning_logs/version_0/hparams.yaml": "",
    "predictions/abc123/output.csv": "filename\tscene_label\n",
    "submissions/Demo_DEMO_task1/pyproject.toml": "[project]\nname = 'Demo_DEMO_task1'\n",
    "submissions/Demo_DEMO_task1/Demo_DEMO_task1/Demo_DEMO_task1_1.py": "import torch\nimport os\nx = 1\n",
    "demo_data/meta.csv": "filename\tscene_label\tidentifier\tsource_label\n",
    "cache/audio.npy": "",
    "split_setup/split25.csv": "filename\tscene_label\n",
}


@pytest.mark.slow
def test_what_runs_leave_at_the_root_changes_nothing_for_the_linter_and_the_tests(tmp_path):
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                            capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout: the repository's files cannot be listed")
    copy = tmp_path / "clone"
    for name in filter(None, listed.stdout.split("\0")):
        if (REPO / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, copy / name)
    for name, text in RUN_LEFTOVERS.items():
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        (copy / name).write_text(text)

    def run(*command):
        done = subprocess.run([sys.executable, *command], cwd=copy, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{' '.join(command)} in a copy holding run folders:\n{done.stdout}{done.stderr}"
        return done.stdout

    run("-m", "ruff", "check", "--no-cache", ".")
    summary = run("-m", "pytest", "-q", "-p", "no:xdist", "tests/test_layers.py").strip().splitlines()[-1]
    assert re.fullmatch(r"\d+ passed in [\d.]+s", summary), summary
    loaded = run("-c", "import wandb, helpers.setup.loggers; print(wandb.__file__)")
    assert not loaded.strip().startswith(str(copy)), "the wandb/ run folder was imported as the wandb package"
