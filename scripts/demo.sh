#!/usr/bin/env bash
# Set up .venv if needed, then run the whole system on the built-in demo set: stage 1, stage 2
# and the evaluation-set predictions (about 10 minutes on 2 CPU cores).
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
.venv/bin/python scripts/demo.py "$@"
