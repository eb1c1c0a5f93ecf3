"""Which stored predictions the cycle compares with realised outcomes: only matured ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from retentio.configs.settings import load_settings
from retentio.features.synth import generate_crm
from retentio.shell.cycle import _matured_performance


def test_matured_performance_waits_for_every_label_horizon(tmp_path: Path) -> None:
    # the next-purchase horizon is the longest: 60 days after the cutoff the churn and LTV
    # labels are complete, the next-purchase labels are not
    settings = load_settings(
        labels={"churn_horizon_days": 30, "next_purchase_horizon_days": 90, "ltv_horizon_days": 30}
    )
    tables = generate_crm(n_customers=300, start="2023-01-01", end="2024-12-31", seed=5)
    cutoff = pd.Timestamp("2024-06-30")
    ids = tables.transactions["customer_id"].drop_duplicates().to_numpy()
    rng = np.random.default_rng(0)
    preds = pd.DataFrame(
        {
            "customer_id": ids,
            "churn_probability": rng.random(len(ids)),
            "predicted_ltv": rng.gamma(2.0, 50.0, len(ids)),
        }
    )
    preds.to_parquet(tmp_path / "predictions_2024-06-30.parquet", index=False)

    def matured(data_end: str) -> list[str]:
        out = _matured_performance(
            tables,
            settings,
            folder=tmp_path,
            history_path=tmp_path / "history.csv",
            data_end=pd.Timestamp(data_end),
        )
        return [p["cutoff"] for p in out]

    assert matured(str((cutoff + pd.Timedelta(days=60)).date())) == []
    assert matured(str((cutoff + pd.Timedelta(days=90)).date())) == ["2024-06-30"]
