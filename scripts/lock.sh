#!/usr/bin/env bash
# Regenerates requirements-lock.txt, what scripts/setup_env.sh installs, from requirements-dev.txt (which includes
# requirements.txt): every package pinned, for Python 3.11 and newer (uv's universal resolution: a package whose
# version differs between Pythons is listed once per Python range). Pins already in the lock are kept where the
# requirement files still allow them; extra arguments go to uv (--upgrade: the newest versions allowed).
# uv comes with requirements-dev.txt; run it with UV=/path/to/uv where .venv has none yet.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
UV=${UV:-.venv/bin/uv}
"$UV" pip compile requirements-dev.txt --universal --python-version 3.11 --quiet \
  --custom-compile-command "bash scripts/lock.sh" --output-file requirements-lock.txt "$@"
