"""Shared test set-up: the repository root importable, torch on few threads, and what many tests share,
made once per session: the demo set, working folders that hold it, and one virtual environment for the
exported packages.

Tiers: ``pytest -m "not slow"`` is the fast tier; tests marked ``slow`` start processes, train longer,
or install packages.
"""
import os
import subprocess
import sys
import sysconfig
from collections import Counter
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from dataset.demo import write_demo_dataset  # noqa: E402

# the shared reference data (organisers' test split, one real clip); absent in a user's clone
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

DEMO_SCALE = 0.05  # 80 training clips (30 of device a, 10 of each other), 90 test clips, 10 evaluation clips
# a narrow CP-Mobile on a small front end: a training step takes milliseconds; tests of the real network
# and front end are in test_cp_mobile.py and test_frontend.py
TINY_NETWORK = ["--base_channels", "8", "--sample_rate", "16000", "--n_mels", "32", "--n_fft", "512",
                "--window_length", "400", "--hop_length", "320", "--freqm", "8"]

# two threads; one per worker where the suite runs in two processes (scripts/test.sh: pytest -n 2)
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    """The demo set at ``DEMO_SCALE``, written once per session. Tests only read it; a test that changes
    files works on a copy."""
    return write_demo_dataset(tmp_path_factory.mktemp("demo") / "demo_data", scale=DEMO_SCALE)


@pytest.fixture(scope="session")
def workdir_factory(tmp_path_factory, demo_dir):
    """``make(name)``: a new working folder holding ``demo_data/`` (a link to the session's demo set), where
    scripts run with ``--demo`` as a user runs them from the repository."""
    def make(name: str) -> Path:
        root = tmp_path_factory.mktemp(name)
        (root / "demo_data").symlink_to(demo_dir, target_is_directory=True)
        return root
    return make


@pytest.fixture(scope="session")
def package_python(tmp_path_factory) -> Path:
    """The interpreter of one virtual environment for every exported package of the session: it cannot
    see the repository but sees this interpreter's packages (torch, ...), so that pip installs a package
    offline with its pinned dependencies met."""
    root = tmp_path_factory.mktemp("package_env")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", root / "venv"], check=True)
    python = root / "venv" / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "outer_site_packages.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return python


def pytest_collection_modifyitems(items):
    """Modules with the most ``slow`` tests first, each module's tests in their own order: the two processes
    of scripts/test.sh (one module at a time, in this order: ``--no-loadscope-reorder``) start on the long
    modules and end on short ones, instead of one running the long modules alone at the end."""
    def module(item):
        return item.nodeid.split("::")[0]
    slow = Counter(module(item) for item in items if item.get_closest_marker("slow"))
    items.sort(key=lambda item: -slow[module(item)])  # stable
