"""Moving time-dependent features to a later scoring date (``serving.scorer.shift_to``)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from retentio.serving.scorer import shift_to


def _rows() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": ["A", "B"],
            "as_of": pd.to_datetime(["2025-06-30", "2025-07-03"]),
            "recency_days": [10.0, np.nan],
            "T_days": [100.0, 50.0],
            "ipt_mean_days": [20.0, np.nan],
            "overdue_ratio": [0.5, np.nan],
        }
    )


def test_a_later_date_moves_days_and_as_of_never_backwards() -> None:
    out = shift_to(_rows(), pd.Timestamp("2025-07-02"))
    assert list(out["as_of"]) == [pd.Timestamp("2025-07-02"), pd.Timestamp("2025-07-03")]
    assert out["recency_days"].iloc[0] == 12.0
    assert out["T_days"].tolist() == [102.0, 50.0]
    assert out["overdue_ratio"].iloc[0] == 12.0 / 20.0
    assert np.isnan(out["recency_days"].iloc[1])


def test_the_same_date_returns_the_frame_unchanged() -> None:
    rows = _rows()
    assert shift_to(rows, pd.Timestamp("2025-06-30")) is rows
