"""Prediction log: every record appended; size-based rotation bounds growth; read back in order."""

from __future__ import annotations

from pathlib import Path

from retentio.serving.prediction_log import PredictionLog, features_hash, read_prediction_log


def test_rotation_bounds_growth_and_reads_back_in_order(tmp_path: Path) -> None:
    path = tmp_path / "predictions.jsonl"
    log = PredictionLog(path, max_bytes=2_000, backups=2)
    try:
        log.write({"customer_id": f"C{i:04d}", "churn_probability": i / 100} for i in range(300))
    finally:
        log.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["predictions.jsonl", "predictions.jsonl.1", "predictions.jsonl.2"]
    assert all(p.stat().st_size <= 2_000 for p in tmp_path.iterdir())
    frame = read_prediction_log(path)
    ids = frame["customer_id"].tolist()
    # the oldest records were rotated away; what is kept is contiguous and ends with the newest
    assert ids[-1] == "C0299"
    assert ids == [f"C{i:04d}" for i in range(300 - len(ids), 300)]
    assert 0 < len(ids) < 300


def test_features_hash_is_stable_and_nan_safe() -> None:
    a = features_hash({"recency_days": float("nan"), "frequency": 3})
    b = features_hash({"frequency": 3, "recency_days": None})
    assert a == b and len(a) == 16
    assert features_hash({"frequency": 4, "recency_days": None}) != a
