"""Shared test set-up: make the repository root importable and keep torch to few threads."""
import sys
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

# the shared reference data (organisers' test split, one real clip); absent in a user's clone
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

torch.set_num_threads(2)
