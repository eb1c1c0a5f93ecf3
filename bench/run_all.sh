#!/usr/bin/env bash
# `make bench`: every benchmark at the sizes of BENCHMARKS.md (1M customers: about an hour on
# 2 cores, ~10 GB of files under bench/out). Figures print as JSON and append to bench/out/*.jsonl.
#   UCI=path/to/uci_online_retail   also runs the real-data benchmarks (features and quality).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
N=${CUSTOMERS:-1000000}
echo "== features: build vs lifetimes' summary_data_from_transaction_data ($N customers)"
$PY bench/bench_features.py --customers "$N"
echo "== training (all three tasks) and batch scoring ($N customers)"
$PY bench/bench_training.py --data "bench/out/synth_$N"
if [ -n "${UCI:-}" ]; then
  echo "== real data: UCI Online Retail (features; model quality)"
  $PY bench/bench_features.py --data "$UCI" --config configs/uci_online_retail.yaml
  # the stated evaluation (data to 2011-12-09) and a backtest with the data ending earlier
  $PY bench/bench_quality.py --data "$UCI" --config configs/uci_online_retail.yaml \
    --cutoff 2011-12-09 --cutoff 2011-11-24 --cutoff 2011-11-09 --cutoff 2011-10-27
fi
echo "== serving: a real server, sequential and concurrent load (wrk if installed)"
command -v wrk >/dev/null || echo "   (wrk not found: apt-get install -y wrk for the concurrent phase)"
$PY -m bench.bench_serve --n-customers "$N"
