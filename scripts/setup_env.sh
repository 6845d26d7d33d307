# Sourced by demo.sh and test.sh: creates .venv in the repository (if missing) and installs requirements-lock.txt
# into it, every package at the version the tests passed with (made from requirements-dev.txt and requirements.txt
# by scripts/lock.sh); skipped when the lock has not changed since the last install.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "Python 3.11 or newer is needed; $PYTHON is $("$PYTHON" --version 2>&1). Run with PYTHON=python3.11 (or newer)." >&2
    exit 1
  fi
  echo "Creating the virtual environment .venv ($($PYTHON --version))"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.requirements.sha256
wanted=$(sha256sum requirements-lock.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  echo "Installing requirements-lock.txt into .venv (torch with its CUDA libraries is about 4.6 GB)"
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -r requirements-lock.txt
  echo "$wanted" > "$stamp"
fi
