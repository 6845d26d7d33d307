#!/usr/bin/env bash
# Set up .venv if needed, then run the whole system on the built-in demo set: stage 1, stage 2,
# the evaluation-set predictions and the submission export (time: see docs/speed.md).
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
.venv/bin/python scripts/demo.py "$@"
