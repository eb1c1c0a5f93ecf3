"""Seasonality and retraining like the champion, with the cycle's own code on synthetic data.

1. Twelve monthly cycles on stationary seasonal data (a Nov-Dec peak) never ask to retrain on
   drift, while a drift injected a month before a cycle does. These use the drift part of the
   policy only (no model: the realised-AUC and model-age triggers are covered in test_cycle).
"""

from __future__ import annotations

import pandas as pd
import pytest

from retentio.configs.settings import Settings, load_settings
from retentio.features.schema import Tables
from retentio.features.synth import Drift, generate_crm
from retentio.shell.cycle import decide, drift_check

pytestmark = pytest.mark.slow

N_CUSTOMERS = 2000
START, END = "2023-01-01", "2025-12-31"
SEED = 4
MONTH_ENDS = pd.date_range("2025-01-31", "2025-12-31", freq="ME")


@pytest.fixture(scope="module")
def seasonal() -> Tables:
    return generate_crm(n_customers=N_CUSTOMERS, start=START, end=END, seed=SEED)


def _decide(tables: Tables, cutoff: pd.Timestamp, settings: Settings) -> tuple:
    reference, drift, _, _ = drift_check(
        tables, settings, cutoff=cutoff, champion_cutoff=pd.Timestamp("2024-10-02")
    )
    return reference, drift, decide(drift, reference, settings)


def test_twelve_monthly_cycles_on_seasonal_data_never_retrain(seasonal: Tables) -> None:
    settings = load_settings()
    shares = {}
    for cutoff in MONTH_ENDS:
        reference, drift, decision = _decide(seasonal, cutoff, settings)
        assert reference.season_adjusted, reference.note
        assert reference.cutoff == cutoff - pd.DateOffset(years=1) or cutoff.month == 2
        assert not decision.retrain, (cutoff.date(), decision.reasons)
        shares[cutoff.month] = drift.drift_share
    # the December peak is there in the data: against the champion's October snapshot the
    # same December reads as drift (what the same-season comparison removes)
    old = load_settings(monitoring={"reference": "champion", "noise_multiple": 1e-9})
    _, december, _ = _decide(seasonal, MONTH_ENDS[-1], old)
    assert december.drift_share > 2 * shares[12]
    assert {"n_orders_90d", "revenue_90d"} <= set(december.drifted_columns)


@pytest.mark.parametrize(
    "drift",
    [
        Drift(spend=1.5, rate=1.0, new_channel_share=0.0),
        Drift(),
    ],
    ids=["spend", "demo"],
)
def test_a_drift_injected_a_month_before_the_cycle_retrains(drift: Drift) -> None:
    # a drift one month old shows in the 30-day windows, key features that decide on a base of
    # short_window_min_active customers (3,000 here: ~1,800 active; the stationary base above,
    # ~1,200 active, is judged on the longer windows only)
    tables = generate_crm(
        n_customers=3000,
        start=START,
        end=END,
        seed=SEED,
        drift_date="2025-06-01",
        drift=drift,
    )
    settings = load_settings()
    _, result, decision = _decide(tables, pd.Timestamp("2025-06-30"), settings)
    assert decision.retrain, result.column_scores
    assert decision.drifted_key_features  # a key feature names what moved
