#!/usr/bin/env bash
# Install if needed, then start the app on http://127.0.0.1:8501
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/streamlit run app/main.py "$@"
