#!/usr/bin/env bash
# Install if needed (plus Chromium and Playwright for the browser test), then run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/python -m pip install -q playwright
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "chromium could not be installed; the browser test will be skipped"
fi
# Two processes, each a test file at a time (module fixtures start a server or train a run once): one process left a
# core idle while browsers and servers waited; three slowed each other (docs/benchmarks.md, "The test suite").
# Files go out in collection order, the longest first (tests/conftest.py, LONG_FILES): xdist's own order, by test
# count, handed out the longest files last. TEST_WORKERS=0 runs in this process; flags given after ours win.
exec .venv/bin/python -m pytest -q -n "${TEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder "$@"
