"""The HTML evaluation report: sections, embedded images, highlighting, frame conversion."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from retentio.training.report import to_report_frame, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def eval_frame() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    n = 2_000
    risk = rng.uniform(0, 1, n)
    y_churn = (rng.uniform(0, 1, n) < risk).astype(float)
    y_churn[:200] = np.nan  # inactive customers: no churn label
    value = rng.gamma(1.5, 100.0, n)
    frame = pd.DataFrame(
        {
            "y_churn": y_churn,
            "p_churn__lightgbm": np.clip(risk + rng.normal(0, 0.1, n), 0, 1),
            "p_churn__logistic_rfm": np.clip(risk + rng.normal(0, 0.3, n), 0, 1),
            "y_ltv": value * rng.uniform(0.5, 1.5, n),
            "pred_ltv__lightgbm": value,
            "pred_ltv__bgnbd_gg": value.mean() + 0 * value,
        }
    )
    for d in (30, 60, 90):
        p = np.full(n, d / 120)
        frame[f"y_next_{d}d"] = (rng.uniform(0, 1, n) < p).astype(float)
        frame[f"p_next_{d}d__lightgbm_hazard"] = p
        frame[f"p_next_{d}d__bgnbd"] = np.full(n, 0.5)
    return frame


METRICS = {
    "churn": {
        "lightgbm": {"auc": 0.81, "brier": 0.16, "bias_pct": 3.0},
        "logistic_rfm": {"auc": 0.74, "brier": 0.19, "bias_pct": -1.0},
    },
    "next-purchase": {
        "lightgbm_hazard": {"brier_60d": 0.2, "interval_coverage_80": 0.78},
        "bgnbd": {"brier_60d": 0.25, "interval_coverage_80": 0.9},
    },
    "ltv": {"lightgbm": {"gini": 0.6, "mae": 50.0}, "bgnbd_gg": {"gini": 0.0, "mae": 80.0}},
}
BOOTSTRAP = {
    "churn": {"metric": "auc", "a": 0.81, "b": 0.74, "diff": 0.07, "lo": 0.05, "hi": 0.09,
              "n_boot": 200, "a_name": "lightgbm", "b_name": "logistic_rfm"},
}  # fmt: skip


def test_report_has_every_section_and_embedded_images(
    eval_frame: pd.DataFrame, tmp_path: Path
) -> None:
    importances = {"churn lightgbm": pd.Series(np.arange(30.0), index=[f"f{i}" for i in range(30)])}
    out = write_report(
        eval_frame,
        METRICS,
        out_path=tmp_path / "sub" / "report.html",
        importances=importances,
        bootstrap=BOOTSTRAP,
        title="tiny <dataset>",
        served={"churn": "lightgbm"},
        churn_horizon_days=90,
        ltv_horizon_days=365,
        currency="GBP",
    )
    page = out.read_text()
    assert out == tmp_path / "sub" / "report.html"
    assert "<title>tiny &lt;dataset&gt;</title>" in page  # escaped
    for section in (
        "<h2 id='churn'>",
        "<h2 id='next-purchase'>",
        "<h2 id='ltv'>",
        "Served candidate against the best baseline",
        "Brier score at 30 / 60 / 90 days",
        "Deciles: predicted vs actual",
        "<h2 id='importances'>",
    ):
        assert section in page, section
    # gain, lift, calibration + LTV deciles + one importance chart, all embedded; the
    # next-purchase Brier scores are a table only (a chart would repeat it)
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 5
    assert all(base64.b64decode(img)[:8] == PNG_MAGIC for img in images)
    assert "http" not in page.replace("https://", "")  # nothing external to load
    # the bootstrap as a sentence and one small table, not a dump of its fields
    assert "lightgbm minus logistic_rfm is <b>+0.0700</b>" in page
    assert "95 % interval [+0.0500, +0.0900] from 200 resamples" in page
    assert "lightgbm is better than logistic_rfm" in page
    assert "n_boot" not in page and "<th>field</th>" not in page
    assert "lightgbm ★ served" in page and "logistic_rfm (baseline)" in page
    # 1800 labelled customers (200 inactive dropped)
    assert "1,800 active customers" in page


def test_charts_are_large_name_features_plainly_and_state_horizon_and_currency(
    eval_frame: pd.DataFrame, tmp_path: Path
) -> None:
    from matplotlib.figure import Figure

    drawn: list[Figure] = []
    original = Figure.savefig

    def keep(fig: Figure, *args: object, **kwargs: object) -> None:
        drawn.append(fig)
        original(fig, *args, **kwargs)

    importances = {"churn": pd.Series([3.0, 2.0], index=["recency_days", "cust_region"])}
    Figure.savefig = keep  # type: ignore[method-assign]
    try:
        write_report(
            eval_frame, METRICS, out_path=tmp_path / "r.html", importances=importances,
            served={"churn": "lightgbm", "ltv": "lightgbm"}, churn_horizon_days=90,
            ltv_horizon_days=365, currency="GBP",
        )  # fmt: skip
    finally:
        Figure.savefig = original  # type: ignore[method-assign]
    texts = []
    for fig in drawn:
        assert fig.get_size_inches()[0] >= 6  # no thumbnail-sized charts
        for ax in fig.axes:
            texts += [ax.get_xlabel(), ax.get_ylabel()]
            texts += [t.get_text() for t in ax.get_yticklabels()]
            legend = ax.get_legend()
            if legend is not None:
                assert min(t.get_fontsize() for t in legend.get_texts()) >= 10
                served = [line for line in legend.get_lines() if "(served)" in line.get_label()]
                others = [line for line in legend.get_lines() if "(served)" not in line.get_label()]
                if served and others:
                    assert served[0].get_linewidth() > max(o.get_linewidth() for o in others)
    joined = " | ".join(texts)
    assert "no purchase within 90 days" in joined
    assert "over 365 days (GBP)" in joined
    assert "days since the last purchase" in joined and "region" in joined
    assert "recency_days" not in joined and "cust_region" not in joined


def test_best_cells_follow_each_metric_direction(eval_frame: pd.DataFrame, tmp_path: Path) -> None:
    page = write_report(eval_frame, METRICS, out_path=tmp_path / "r.html").read_text()
    best = re.findall(r"<tr><td>([^<]+)</td>(.*?)</tr>", page)
    cells = {name: re.findall(r"<td( class='best')?>([^<]*)</td>", row) for name, row in best}
    # auc: higher wins; brier: lower wins; bias_pct: nearest 0 wins; coverage_80: nearest 0.8
    assert cells["auc"] == [(" class='best'", "0.81"), ("", "0.74")]
    assert cells["brier"] == [(" class='best'", "0.16"), ("", "0.19")]
    assert cells["bias_pct"] == [("", "3"), (" class='best'", "-1")]
    assert cells["interval_coverage_80"] == [(" class='best'", "0.78"), ("", "0.9")]
    assert cells["gini"] == [(" class='best'", "0.6"), ("", "0")]
    # Brier by window recomputed from the frame: a constant 0.5 scores 0.25 exactly, worse
    # than the hazard model's true probability 30/120 (about 0.1875)
    assert cells["30 days"][0][0] == " class='best'"
    assert cells["30 days"][1] == ("", "0.25")


def test_pipeline_frame_is_converted(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "is_active": [True, True, False, True],
            "churned": [1.0, 0.0, np.nan, 1.0],
            "future_revenue": [0.0, 120.0, 0.0, 10.0],
            "days_to_next_purchase": [91.0, 20.0, 91.0, 45.0],
            "next_purchase_observed": [False, True, False, True],
            "churn__lightgbm__churn_probability": [0.9, 0.2, 0.5, 0.7],
            "churn__lightgbm__p_alive": [0.1, 0.8, 0.5, 0.3],
            "ltv__bgnbd_gg__predicted_ltv": [5.0, 100.0, 1.0, 20.0],
            "next-purchase__bgnbd__p_purchase_30d": [0.1, 0.6, 0.1, 0.3],
            "next-purchase__bgnbd__p_purchase_60d": [0.2, 0.7, 0.1, 0.5],
        }
    )
    out = to_report_frame(frame, next_purchase_horizon_days=60)
    assert sorted(out.columns) == sorted([
        "y_churn", "y_ltv", "y_next_30d", "y_next_60d", "p_churn__lightgbm",
        "pred_ltv__bgnbd_gg", "p_next_30d__bgnbd", "p_next_60d__bgnbd",
    ])  # fmt: skip
    np.testing.assert_array_equal(out["y_churn"], [1.0, 0.0, np.nan, 1.0])
    np.testing.assert_array_equal(out["y_next_30d"], [0.0, 1.0, 0.0, 0.0])
    np.testing.assert_array_equal(out["y_next_60d"], [0.0, 1.0, 0.0, 1.0])
    # write_report converts it by itself; Brier at 30 d = mean((p - y)^2) by hand
    metrics = {"next-purchase": {"bgnbd": {}}, "churn": {"lightgbm": {"auc": 1.0}}}
    page = write_report(frame, metrics, out_path=tmp_path / "p.html").read_text()
    brier_30 = np.mean((np.array([0.1, 0.6, 0.1, 0.3]) - np.array([0, 1, 0, 0])) ** 2)
    assert f"<tr><td>30 days</td><td>{brier_30:.4g}</td></tr>" in page
    assert "3 active customers" in page


def test_empty_tasks_do_not_fail(tmp_path: Path) -> None:
    page = write_report(
        pd.DataFrame({"y_churn": [0.0, 0.0]}),
        {"churn": {"bgnbd": {"auc": float("nan")}}},
        out_path=tmp_path / "e.html",
    ).read_text()
    assert "<h2 id='churn'>" in page and "data:image/png" not in page
