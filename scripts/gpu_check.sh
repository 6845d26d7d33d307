#!/usr/bin/env bash
# On a machine with a CUDA GPU: does this repository work here, and how fast? Sets up .venv if needed,
# runs the GPU tier (tests/test_gpu.py), then benchmarks/gpu_report.py, which writes gpu_report.md
# (how to read it: docs/gpu.md). Without a GPU it says so and stops, writing nothing.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if ! nvidia-smi -L >/dev/null 2>&1; then
  echo "No CUDA GPU here (nvidia-smi finds none): this check needs one; nothing was written." >&2
  exit 1
fi
source scripts/setup_env.sh
set +e
if ! .venv/bin/python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "torch $(.venv/bin/python -c 'import torch; print(torch.__version__)') sees no CUDA GPU (driver too old for its CUDA build? docs/gpu.md); nothing was written." >&2
  exit 1
fi
log=$(mktemp)
.venv/bin/python -m pytest -q -p no:xdist -m gpu tests/test_gpu.py 2>&1 | tee "$log"
tier=${PIPESTATUS[0]}
summary=$(grep -E "(passed|failed|error)" "$log" | tail -n 1 | tr -d '=' | xargs)
rm -f "$log"
.venv/bin/python benchmarks/gpu_report.py --out gpu_report.md --tier_summary "${summary:-no summary}"
report=$?
exit $(( tier != 0 ? tier : report ))
