#!/usr/bin/env bash
# Set up .venv if needed, then the linter and the test suite; extra arguments go to pytest
# (the fast tier: bash scripts/test.sh -m "not slow"). The tests run in two processes (pytest-xdist, a test
# module per process; PYTEST_WORKERS=0 runs them in this one). Times: docs/speed.md.
source "$(dirname "${BASH_SOURCE[0]}")/setup_env.sh"
.venv/bin/ruff check .
.venv/bin/python -m pytest -q -n "${PYTEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder tests "$@"
