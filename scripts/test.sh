#!/usr/bin/env bash
# Set up .venv if needed, then run the whole test suite (a few minutes on 2 CPU cores).
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
.venv/bin/python -m pytest -q tests "$@"
