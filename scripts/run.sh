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
echo "== 1b. remember this data folder and config: later commands here need neither flag"
$R init --data "$DATA_DIR" "${CONFIG_ARGS[@]}"
echo "== 2. check the data"
$R data check --data "$DATA_DIR" "${CONFIG_ARGS[@]}"
echo "== 3. build point-in-time features (offline Parquet + online SQLite)"
$R features build --data "$DATA_DIR" "${CONFIG_ARGS[@]}"
echo "== 4. train churn, next-purchase and LTV beside their baselines (MLflow: mlruns/)"
$R train --data "$DATA_DIR" "${CONFIG_ARGS[@]}"
echo "== 5. promotion gate: @champion moves only if the candidate is at least as good"
$R models promote all --data "$DATA_DIR" "${CONFIG_ARGS[@]}" || true
echo "== 6. the at-risk list (artifacts/at_risk.csv)"
$R at-risk --data "$DATA_DIR" --top 100 --out artifacts/at_risk.csv "${CONFIG_ARGS[@]}"
PORT=${PORT:-3000}
cat <<MSG
== 7. serving the champions on http://127.0.0.1:$PORT (Ctrl-C stops). Try, from another shell:
  curl -s -X POST localhost:$PORT/score -H 'content-type: application/json' \\
       -d "{\"customer_id\": \"$(sed -n 2p artifacts/at_risk.csv | cut -d, -f1)\"}"
  curl -s -X POST localhost:$PORT/at_risk -H 'content-type: application/json' -d '{"top": 5}'
  curl -s -X POST localhost:$PORT/events -H 'content-type: application/json' \\
       -d '{"customer_id": "$(sed -n 2p artifacts/at_risk.csv | cut -d, -f1)", "transactions": [{"timestamp": "$(sed -n 2p artifacts/at_risk.csv | cut -d, -f2)", "amount": 80.0}]}'
  curl -s -o /dev/null -w 'readyz %{http_code}\\n' localhost:$PORT/readyz  # 200 = ready
  curl -s localhost:$PORT/metrics | grep '^retentio_' | head
  MLflow UI: make ui      report: artifacts/reports/
MSG
exec $R serve --port "$PORT" "${CONFIG_ARGS[@]}"
