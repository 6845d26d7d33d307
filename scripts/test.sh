#!/usr/bin/env bash
# Set up .venv if needed, then the linter and the test suite; extra arguments go to pytest
# (the fast tier: bash scripts/test.sh -m "not slow"). Times: README, Quick start.
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
.venv/bin/ruff check .
.venv/bin/python -m pytest -q tests "$@"
