#!/bin/bash
# paper-cleansing with train.trace_lr=auto, one seed (issue 24; docs/benchmarks.md "Fine-tune and trace_lr=auto"):
# train with the probe and estimate (bench/trace_lr.py: JSON, CPU s, wall, peak RSS), the spot check, then replay
# without the top 5k/15k/25k by influence on FID, by Isolation Forest and at random. About 2 h per seed at 1 thread.
#   bash bench/paper_auto.sh STORE_DIR SEED [RULE]   (RULE: train.trace_lr_confirm: replayed, the default,
#                                                     measured or passed; bench/trace_lr.py's variants)
#   CHECK=none bash bench/paper_auto.sh ...         (leaves the spot check out: about 7 minutes less)
# Writes STORE_DIR/paper-auto-sSEED.jsonl: the training line, the check, then one line per cleanse.
set -euo pipefail
cd "$(dirname "$0")/.."
store=${1:?usage: bench/paper_auto.sh STORE_DIR SEED [RULE]}
seed=${2:?usage: bench/paper_auto.sh STORE_DIR SEED [RULE]}
rule=${3:-replayed}
out="$store/paper-auto-s$seed.jsonl"
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE
py=${PYTHON:-.venv/bin/python}
variant=auto; [ "$rule" = replayed ] || variant=auto-$rule
"$py" bench/trace_lr.py --store "$store" --preset paper-cleansing --seed "$seed" --variants "$variant" \
  --metric fid | tail -1 >> "$out"
run=$("$py" -c 'import json,sys; print(json.loads(open(sys.argv[1]).readlines()[-1])["run_id"])' "$out")
if [ "${CHECK:-quick}" != none ]; then
  "$py" -m influence --store "$store" estimate --run "$run" --metric fid --check "${CHECK:-quick}" --json | tail -1 \
    | "$py" -c 'import json,sys; print(json.dumps({"check": json.loads(sys.stdin.read())}))' >> "$out"
fi
for k in 5000 15000 25000; do
  for by in fid random iforest; do
    "$py" -m influence --store "$store" cleanse --run "$run" --top-harmful "$k" --by "$by" --json | tail -1 \
      | "$py" -c 'import json,sys; print(json.dumps({"k": int(sys.argv[1]), "by": sys.argv[2],
"out": json.loads(sys.stdin.read())}))' "$k" "$by" >> "$out"
  done
done
