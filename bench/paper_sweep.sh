#!/bin/bash
# The paper's data-cleansing experiment (issue 13): 3 seeds of paper-cleansing, influence on FID vs
# Isolation Forest vs random, 5k/15k/25k removed. Hours on 2 cores; rerun to resume where it stopped.
#   bash bench/paper_sweep.sh STORE_DIR
# Seconds per seed: .venv/bin/python bench/sweep_cost.py --store STORE_DIR --methods fid iforest random
set -euo pipefail
cd "$(dirname "$0")/.."
store=${1:?usage: bench/paper_sweep.sh STORE_DIR}
exec .venv/bin/gan-influence sweep --store "$store" --preset paper-cleansing --seeds 0 1 2 \
  --methods fid iforest random --counts 5000 15000 25000 --json
