#!/usr/bin/env bash
# `make run`: the main job on embedded defaults (synthetic data unless DATA points at real data,
# SQLite MLflow store under mlruns/, files under artifacts/).
#   DATA=path/to/folder CONFIG=configs/your.yaml make run   runs it on your own export.
set -euo pipefail
cd "$(dirname "$0")/.."
R=.venv/bin/retentio
CONFIG_ARGS=()
[ -n "${CONFIG:-}" ] && CONFIG_ARGS=(--config "$CONFIG")
DATA_DIR=${DATA:-data/synthetic}

if [ -z "${DATA:-}" ] && [ ! -f "$DATA_DIR/transactions.csv" ]; then
  echo "== 1. synthesise a CRM into $DATA_DIR"
  $R data synth --out "$DATA_DIR" "${CONFIG_ARGS[@]}"
fi
echo "== 2. check the data"
$R data check --data "$DATA_DIR" "${CONFIG_ARGS[@]}"
echo "== 3. build point-in-time features (offline Parquet + online SQLite)"
$R features build --data "$DATA_DIR" "${CONFIG_ARGS[@]}"
