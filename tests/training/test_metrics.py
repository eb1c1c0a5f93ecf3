"""Tests for training.metrics: hand-computed values, sklearn/scipy cross-checks, bootstrap."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn import metrics as skm

from retentio.errors import ContractError
from retentio.training import metrics as tm

# The classic 4-row example: y = [0, 0, 1, 1], p = [0.1, 0.4, 0.35, 0.8]
Y = np.array([0, 0, 1, 1])
P = np.array([0.1, 0.4, 0.35, 0.8])


def test_auc_hand_computed() -> None:
    # positive/negative pairs: 0.35>0.1 win, 0.35<0.4 loss, 0.8>0.1 win, 0.8>0.4 win -> 3/4
    assert tm.auc(Y, P) == pytest.approx(0.75)
    # a tie counts one half
    assert tm.auc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)
    assert np.isnan(tm.auc([1, 1, 1], [0.2, 0.3, 0.4]))


def test_pr_auc_hand_computed() -> None:
    # sorted by p: 0.8 (pos) -> P=1, R=0.5; 0.4 (neg); 0.35 (pos) -> P=2/3, R=1
    # AP = 0.5 * 1 + 0.5 * 2/3 = 0.8333
    assert tm.pr_auc(Y, P) == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert np.isnan(tm.pr_auc([0, 0], [0.1, 0.2]))


def test_log_loss_and_brier_hand_computed() -> None:
    # -(ln 0.9 + ln 0.6 + ln 0.35 + ln 0.8) / 4
    # = (0.1053605 + 0.5108256 + 1.0498221 + 0.2231436) / 4 = 0.4722880
    assert tm.log_loss(Y, P) == pytest.approx(0.4722880, abs=1e-6)
    # (0.1^2 + 0.4^2 + 0.65^2 + 0.2^2) / 4 = (0.01 + 0.16 + 0.4225 + 0.04) / 4 = 0.158125
    assert tm.brier(Y, P) == pytest.approx(0.158125)
    # clipping keeps a confident mistake finite
    assert np.isfinite(tm.log_loss([1], [0.0]))


def test_lift_hand_computed() -> None:
    # base rate 0.5; top 25 % = 1 row (p=0.8, positive) -> 1 / 0.5 = 2
    assert tm.lift_at(Y, P, 0.25) == pytest.approx(2.0)
    # top 50 % = p 0.8 (pos), 0.4 (neg) -> 0.5 / 0.5 = 1
    assert tm.lift_at(Y, P, 0.5) == pytest.approx(1.0)
    # 10 % of 30 rows is 3 rows, not 4 (float 0.1 * 30 = 3.0000000000000004)
    y30 = np.r_[np.ones(3), np.zeros(27)]
    assert tm.lift_at(y30, np.linspace(1, 0, 30), 0.10) == pytest.approx(1 / 0.1)


def test_lift_ties_do_not_depend_on_row_order() -> None:
    # top 2 of p = [0.9, 0.5, 0.5, 0.1]: 0.9 in full, the two 0.5 share the last place (1/2 each)
    # positives in top: 1 (the 0.9) + 0.5*0 + 0.5*0 -> rate 1/2; base 1/4 -> lift 2
    y = np.array([1, 0, 0, 0])
    p = np.array([0.9, 0.5, 0.5, 0.1])
    assert tm.lift_at(y, p, 0.5) == pytest.approx(2.0)
    # positive among the tie: top = 0.9 (neg) + half of each 0.5 -> 0.5 positives / 2 = 0.25
    y2 = np.array([0, 1, 0, 0])
    assert tm.lift_at(y2, p, 0.5) == pytest.approx(0.25 / 0.25)
    assert tm.lift_at(y2[::-1], p[::-1], 0.5) == pytest.approx(1.0)


def test_ece_hand_computed() -> None:
    # 2 bins: [0, .5): p .1 .4 .35, y 0 0 1 -> |0.85/3 - 1/3| = 0.05, weight 3/4 -> 0.0375
    #         [.5, 1]: p .8, y 1 -> 0.2, weight 1/4 -> 0.05;  total 0.0875
    assert tm.expected_calibration_error(Y, P, n_bins=2) == pytest.approx(0.0875)
    # 10 bins: each row alone: (0.1 + 0.4 + 0.65 + 0.2) / 4 = 0.3375
    assert tm.expected_calibration_error(Y, P) == pytest.approx(0.3375)
    # p = 1 falls in the last bin; perfectly calibrated extremes give 0
    assert tm.expected_calibration_error([0, 1], [0.0, 1.0]) == pytest.approx(0.0)


def test_classification_metrics_keys_and_sklearn_agreement() -> None:
    rng = np.random.default_rng(1)
    p = np.round(rng.uniform(size=500), 2)  # rounding creates ties
    y = (rng.uniform(size=500) < p).astype(int)
    out = tm.classification_metrics(y, p)
    assert set(out) == {"auc", "pr_auc", "log_loss", "brier", "lift_at_10", "ece"}
    assert out["auc"] == pytest.approx(skm.roc_auc_score(y, p))
    assert out["pr_auc"] == pytest.approx(skm.average_precision_score(y, p))
    assert out["log_loss"] == pytest.approx(skm.log_loss(y, p))
    assert out["brier"] == pytest.approx(skm.brier_score_loss(y, p))
    assert out["lift_at_10"] > 1.5  # informative scores
    assert 0 <= out["ece"] < 0.1  # calibrated by construction


def test_classification_errors() -> None:
    with pytest.raises(ContractError, match="`y` has 2 rows but `p` has 3"):
        tm.auc([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ContractError, match="`p` holds 1 NaN"):
        tm.brier([0, 1], [0.1, np.nan])
    with pytest.raises(ContractError, match="must be 0/1 labels"):
        tm.log_loss([0, 2], [0.1, 0.2])
    with pytest.raises(ContractError, match=r"probabilities in \[0, 1\]"):
        tm.auc([0, 1], [-1.0, 3.0])
    with pytest.raises(ContractError, match=r"frac must be in \(0, 1\]"):
        tm.lift_at([0, 1], [0.1, 0.2], 0.0)
    with pytest.raises(ContractError, match="empty"):
        tm.mae([], [])


def test_regression_hand_computed() -> None:
    y = np.array([10.0, 0.0, 30.0, 20.0])
    pred = np.array([12.0, 5.0, 25.0, 20.0])
    # errors 2, 5, -5, 0 -> MAE 12/4 = 3; RMSE sqrt((4 + 25 + 25 + 0)/4) = sqrt(13.5)
    assert tm.mae(y, pred) == pytest.approx(3.0)
    assert tm.rmse(y, pred) == pytest.approx(np.sqrt(13.5))
    # (62 - 60) / 60 * 100 = 3.333 %
    assert tm.aggregate_bias_pct(y, pred) == pytest.approx(100 * 2 / 60)
    # same order -> Spearman 1, Gini 1
    assert tm.spearman(y, pred) == pytest.approx(1.0)
    assert tm.normalized_gini(y, pred) == pytest.approx(1.0)
    out = tm.regression_metrics(y, pred)
    assert set(out) == {"mae", "rmse", "spearman", "gini", "top_decile_capture", "bias_pct"}


def _kaggle_gini(y: np.ndarray, pred: np.ndarray) -> float:
    order = np.argsort(-pred, kind="stable")
    cum = np.cumsum(y[order]) / y.sum()
    n = y.size
    return cum.sum() / n - (n + 1) / (2 * n)


def test_normalized_gini_hand_computed_and_kaggle() -> None:
    y = np.array([1.0, 0.0, 3.0, 2.0])
    pred = np.array([0.1, 0.2, 0.9, 0.5])
    # ranks of pred [1, 2, 4, 3], centre 2.5: 1*(-1.5) + 0 + 3*1.5 + 2*0.5 = 4
    # ranks of y    [2, 1, 4, 3]:             1*(-0.5) + 0 + 3*1.5 + 2*0.5 = 5  -> 4/5
    assert tm.normalized_gini(y, pred) == pytest.approx(0.8)
    rng = np.random.default_rng(3)
    y = rng.gamma(0.5, 100, 300)
    pred = y * rng.lognormal(0, 1, 300)
    expected = _kaggle_gini(y, pred) / _kaggle_gini(y, y)
    assert tm.normalized_gini(y, pred) == pytest.approx(expected)
    assert tm.normalized_gini(y, -y) == pytest.approx(-1.0)


def test_top_decile_capture_hand_computed() -> None:
    y = np.arange(1.0, 11.0)  # 1..10, total 55; top decile = 1 row
    assert tm.top_decile_capture(y, y) == pytest.approx(10 / 55)
    assert tm.top_decile_capture(y, -y) == pytest.approx(1 / 55)
    # constant prediction: every row gets weight 1/10 -> mean share 5.5 / 55 = 0.1
    assert tm.top_decile_capture(y, np.zeros(10)) == pytest.approx(0.1)
    assert np.isnan(tm.top_decile_capture(np.zeros(10), y))


def test_regression_against_sklearn_and_scipy() -> None:
    rng = np.random.default_rng(4)
    y = rng.gamma(1.0, 50, 400)
    pred = np.round(y + rng.normal(0, 30, 400), 0)
    assert tm.mae(y, pred) == pytest.approx(skm.mean_absolute_error(y, pred))
    assert tm.rmse(y, pred) == pytest.approx(np.sqrt(skm.mean_squared_error(y, pred)))
    assert tm.spearman(y, pred) == pytest.approx(spearmanr(y, pred).statistic)
    assert np.isnan(tm.spearman(y, np.ones(400)))


def test_interval_coverage_censoring_rule() -> None:
    t = [10, 20, 90, 90, 90, 90]
    observed = [1, 1, 0, 0, 0, 0]
    lo = [5, 5, 100, 30, 30, 95]
    hi = [15, 15, 200, 60, np.inf, np.inf]
    # row 1 observed 10 in [5, 15] covered; row 2 observed 20 miss;
    # row 3 censored at 90, [100, 200]: unknown; row 4 censored at 90 > hi 60: miss;
    # row 5 censored, [30, inf): covered; row 6 censored at 90, lo 95 > 90: unknown
    counts = tm.interval_coverage_counts(t, observed, lo, hi)
    assert counts == {
        "coverage": 0.5,
        "n_evaluated": 4.0,
        "n_covered": 2.0,
        "n_undetermined": 2.0,
    }
    assert tm.interval_coverage(t, observed, lo, hi) == pytest.approx(0.5)
    assert np.isnan(tm.interval_coverage([90], [0], [10], [100]))
    with pytest.raises(ContractError, match="lo > hi"):
        tm.interval_coverage([1], [1], [5], [2])


def _data(n: int = 400, seed: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=n)
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-2 * signal))).astype(int)
    good = 1 / (1 + np.exp(-2 * signal))
    weak = 1 / (1 + np.exp(-(0.5 * signal + rng.normal(size=n))))
    return y, good, weak


def test_paired_bootstrap_interval_and_seed() -> None:
    y, good, weak = _data()
    out = tm.paired_bootstrap(y, good, weak, "auc", n_boot=300, seed=7)
    assert out["diff"] == pytest.approx(tm.auc(y, good) - tm.auc(y, weak))
    assert out["lo"] <= out["diff"] <= out["hi"]
    assert out["lo"] > 0  # the better model wins clearly
    assert out["n_valid"] == 300
    again = tm.paired_bootstrap(y, good, weak, "auc", n_boot=300, seed=7)
    assert again == out
    other = tm.paired_bootstrap(y, good, weak, "auc", n_boot=300, seed=8)
    assert other["lo"] != out["lo"]


def test_paired_bootstrap_vectorised_equals_loop() -> None:
    # the batched AUC/Brier paths must give exactly what a per-resample callable gives
    y, good, weak = _data(120)
    for name in ("auc", "brier", "log_loss", "spearman"):
        fast = tm.paired_bootstrap(y, good, weak, name, n_boot=50, seed=1)
        func = tm.METRICS[name]
        slow = tm.paired_bootstrap(y, good, weak, lambda a, b, f=func: f(a, b), n_boot=50, seed=1)
        assert fast["lo"] == pytest.approx(slow["lo"])
        assert fast["hi"] == pytest.approx(slow["hi"])


def test_paired_bootstrap_undefined_resamples_and_identity() -> None:
    # one positive in 4 rows: P(no positive in a resample) = (3/4)^4 = 0.32 -> AUC undefined
    y = np.array([0, 0, 0, 1])
    out = tm.paired_bootstrap(y, [0.1, 0.2, 0.3, 0.9], [0.4, 0.3, 0.2, 0.1], "auc", n_boot=200)
    assert 80 < out["n_valid"] < 180
    assert np.isfinite(out["lo"]) and np.isfinite(out["hi"])
    # a model against itself: every difference is 0
    same = tm.paired_bootstrap(y, [0.1, 0.2, 0.3, 0.9], [0.1, 0.2, 0.3, 0.9], "pr_auc", n_boot=20)
    assert same["diff"] == 0 and same["lo"] == 0 and same["hi"] == 0


def test_paired_bootstrap_errors() -> None:
    with pytest.raises(ContractError, match="unknown metric 'f1'"):
        tm.paired_bootstrap([0, 1], [0.1, 0.9], [0.2, 0.8], "f1")
    with pytest.raises(ContractError, match="n_boot must be >= 1"):
        tm.paired_bootstrap([0, 1], [0.1, 0.9], [0.2, 0.8], "auc", n_boot=0)
    with pytest.raises(ContractError, match="`y` has 2 rows but `p_b` has 1"):
        tm.paired_bootstrap([0, 1], [0.1, 0.9], [0.2], "auc")


def test_bootstrap_interval_of_the_aggregate_bias() -> None:
    rng = np.random.default_rng(3)
    y = rng.gamma(0.5, 100.0, 4000)
    # a constant 20 % over-forecast is +20 % on every resample
    lo, hi = tm.bootstrap_interval(y, 1.2 * y, "bias_pct", n_boot=200, seed=0)
    assert lo == pytest.approx(20.0) and hi == pytest.approx(20.0)
    noisy = 1.1 * y + rng.normal(0.0, 30.0, y.size)
    point = tm.aggregate_bias_pct(y, noisy)
    lo, hi = tm.bootstrap_interval(y, noisy, "bias_pct", n_boot=300, seed=0)
    assert lo < point < hi and hi - lo > 0.5
    # the vectorised bias equals the metric on each resample (same seed, same rows)
    idx = np.random.default_rng(0).integers(0, y.size, size=(300, y.size))
    values = np.array([tm.aggregate_bias_pct(y[i], noisy[i]) for i in idx])
    assert (lo, hi) == pytest.approx(tuple(np.percentile(values, [2.5, 97.5])))
    # more customers, a narrower interval
    lo4, hi4 = tm.bootstrap_interval(
        np.tile(y, 4), np.tile(noisy, 4), "bias_pct", n_boot=300, seed=0
    )
    assert hi4 - lo4 < hi - lo
    with pytest.raises(ContractError, match="unknown metric"):
        tm.bootstrap_interval(y, noisy, "bias", n_boot=10)


def test_auc_difference_is_delong_s_paired_interval() -> None:
    rng = np.random.default_rng(3)
    n = 3000
    s = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-2 * s))).astype(float)
    a = 1 / (1 + np.exp(-(s + rng.normal(0, 0.5, n))))
    b = 1 / (1 + np.exp(-(s + rng.normal(0, 0.9, n))))
    out = tm.auc_difference(y, a, b)
    assert out["a"] == pytest.approx(skm.roc_auc_score(y, a))
    assert out["b"] == pytest.approx(skm.roc_auc_score(y, b))
    assert out["diff"] == pytest.approx(out["a"] - out["b"])
    assert out["lo"] < out["diff"] < out["hi"] and out["lo"] > 0  # a ranks better, clearly
    # the same width as the paired bootstrap's (which resamples; DeLong does not)
    boot = tm.paired_bootstrap(y, a, b, "auc", n_boot=1000, seed=0)
    assert out["hi"] - out["lo"] == pytest.approx(boot["hi"] - boot["lo"], rel=0.15)
    # a model against itself: no difference, no spread; one class: undefined
    same = tm.auc_difference(y, a, a)
    assert same["diff"] == 0 and same["se"] == pytest.approx(0.0, abs=1e-12)
    assert np.isnan(tm.auc_difference(np.ones(n), a, b)["hi"])
