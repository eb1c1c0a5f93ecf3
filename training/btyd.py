"""BG/NBD + Gamma-Gamma baseline ("buy till you die"), a sklearn-style wrapper over lifetimes.

The model is fitted with the ``lifetimes`` package (0.11.x, imported only when fitting);
predictions are computed here from the fitted parameters with vectorised NumPy/SciPy formulas, so
a fitted :class:`BtydBaseline` holds only a few floats (it pickles small, predicts on millions of
customers at once, and serving never imports lifetimes).

Units and columns
-----------------
Time is in **days**. Our feature frame (``features/schema.py``) has ``frequency`` (repeat purchase
days), ``recency_days`` (days since the last purchase), ``T_days`` (days since the first
purchase) and ``monetary_value`` (mean value of repeat purchase days). lifetimes wants
``recency`` = time from the first to the last purchase, i.e. ``T_days - recency_days``; see
:func:`to_lifetimes_frame`. Frames already in lifetimes form (``frequency``, ``recency``, ``T``,
``monetary_value``) are accepted as they are.

Customers without history (NaN ``T_days`` or ``frequency``: never purchased before the cutoff)
cannot be scored by a model of repeat buying: every output of theirs is NaN.

References
----------
.. [1] Fader, P. S., Hardie, B. G. S. and Lee, K. L. (2005), "'Counting Your Customers' the Easy
   Way: An Alternative to the Pareto/NBD Model", *Marketing Science* 24 (2), 275-284.
.. [2] Fader, P. S., Hardie, B. G. S. and Lee, K. L. (2008), "Computing P(alive) Using the
   BG/NBD Model", http://brucehardie.com/notes/021/.
.. [3] Fader, P. S., Hardie, B. G. S. and Lee, K. L. (2005), "RFM and CLV: Using Iso-Value Curves
   for Customer Base Analysis", *Journal of Marketing Research* 42 (4), 415-430 (Gamma-Gamma).
.. [4] Fader, P. S. and Hardie, B. G. S. (2013), "The Gamma-Gamma Model of Monetary Value",
   http://brucehardie.com/notes/025/.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator

import numpy as np
import pandas as pd
from scipy.special import expit, hyp2f1
from sklearn.base import BaseEstimator

from retentio.errors import ContractError, InsufficientDataError, RetentioError

logger = logging.getLogger(__name__)

__all__ = ["BtydBaseline", "BtydFitError", "to_lifetimes_frame"]

OUTPUT_COLUMNS = ["p_alive", "expected_purchases", "expected_spend", "clv", "p_churn"]
_MIN_GG_CUSTOMERS = 10  # below this many repeat buyers with positive spend, use their mean
_DISCOUNT_STEP_DAYS = 30  # discounted CLV sums expected purchases over steps of this length


class BtydFitError(RetentioError):
    """The BG/NBD or Gamma-Gamma likelihood could not be maximised (even with more penalty)."""

    exit_code = 1


def to_lifetimes_frame(features: pd.DataFrame) -> pd.DataFrame:
    """Convert our RFM feature columns to lifetimes' ``frequency, recency, T, monetary_value``.

    Parameters
    ----------
    features
        A frame with ``frequency``, ``recency_days``, ``T_days`` and ``monetary_value`` (the
        feature builder's columns), or already with ``frequency``, ``recency``, ``T`` (and
        optionally ``monetary_value``), which is returned checked. The index is kept.

    Returns
    -------
    pd.DataFrame
        Float columns ``frequency``, ``recency`` (= ``T_days - recency_days``: days from the first
        to the last purchase), ``T`` (= ``T_days``) and ``monetary_value`` (NaN -> 0 where
        ``frequency == 0``). ``recency`` is set to 0 where ``frequency == 0`` (lifetimes'
        convention: without a repeat purchase the first purchase is the last). Rows without
        history keep NaN.

    Raises
    ------
    ContractError
        A column is missing, ``frequency`` is negative, or ``recency`` falls outside ``[0, T]``
        (i.e. ``recency_days > T_days`` or negative); the message gives the count and an example.
    """
    cols = set(features.columns)
    if {"frequency", "recency_days", "T_days"} <= cols:
        recency = features["T_days"].astype(float) - features["recency_days"].astype(float)
        T = features["T_days"].astype(float)
    elif {"frequency", "recency", "T"} <= cols:
        recency = features["recency"].astype(float)
        T = features["T"].astype(float)
    else:
        raise ContractError(
            "BG/NBD input needs columns frequency, recency_days, T_days (feature frame) or "
            f"frequency, recency, T (lifetimes frame); got {sorted(cols)[:12]}; "
            "build the RFM features first (`retentio features build`)"
        )
    frequency = features["frequency"].astype(float)
    if "monetary_value" in cols:
        monetary = features["monetary_value"].astype(float)
    else:
        monetary = pd.Series(np.nan, index=features.index)
    monetary = monetary.where(~((frequency == 0) & monetary.isna()), 0.0)
    # no repeat purchase: first = last purchase, so recency is 0 by definition (this also absorbs
    # sub-day gaps between two orders of the same purchase day)
    recency = recency.where(frequency != 0, 0.0)
    out = pd.DataFrame(
        {"frequency": frequency, "recency": recency, "T": T, "monetary_value": monetary},
        index=features.index,
    )
    _check_rfm(out)
    return out


def _check_rfm(frame: pd.DataFrame) -> None:
    f, r, T = frame["frequency"], frame["recency"], frame["T"]
    problems = {
        "frequency < 0": f < 0,
        "frequency not a whole number": (f % 1).abs() > 0,
        "recency < 0 (recency_days > T_days)": r < -1e-9,
        "recency > T (negative recency_days)": r > T + 1e-9,
        "T < 0 (negative T_days)": T < 0,
    }
    for what, mask in problems.items():
        mask = mask.fillna(False)
        if mask.any():
            example = frame[mask].iloc[0].to_dict()
            raise ContractError(
                f"BG/NBD input: {int(mask.sum())} rows with {what}, e.g. index "
                f"{frame.index[mask.to_numpy()][0]!r}: {example}; check the RFM feature builder"
            )


class BtydBaseline(BaseEstimator):
    """BG/NBD (purchase counts, P(alive)) + Gamma-Gamma (spend per purchase) customer model.

    sklearn conventions: ``__init__`` only stores hyperparameters (so ``get_params``, ``clone``
    and MLflow param logging work), ``fit`` returns ``self``, learned state ends in ``_``. It
    is not a feature-matrix estimator: ``fit``/``predict`` take RFM frames.

    Parameters
    ----------
    penalizer
        L2 penalty on the model parameters passed to lifetimes (``penalizer_coef``). It
        stabilises the fit but shrinks the parameters (0.001 already pulls ``a`` and ``b``
        down noticeably); 0 (the default) is the plain maximum-likelihood fit. On a failed fit the
        penalty is raised tenfold up to three times.
    max_fit_customers
        Fit on a random sample of at most this many customers (predictions cover all); the
        parameters barely move between a 100k sample and 1M customers (fit times in
        BENCHMARKS.md).
    random_state
        Seed of the sample.

    Attributes
    ----------
    params_ : pd.Series
        BG/NBD ``r, alpha, a, b`` (``alpha`` in days).
    gg_params_ : pd.Series or None
        Gamma-Gamma ``p, q, v``; None when it fell back to the mean spend.
    population_spend_ : float
        Expected spend per purchase of a customer without repeat history.
    penalizer_used_ : float
        Penalty of the successful BG/NBD fit.
    n_fit_customers_ : int
        Customers the BG/NBD was fitted on.
    """

    def __init__(
        self,
        penalizer: float = 0.0,
        *,
        max_fit_customers: int = 100_000,
        random_state: int = 0,
    ) -> None:
        self.penalizer = penalizer
        self.max_fit_customers = max_fit_customers
        self.random_state = random_state

    # ------------------------------------------------------------------ fit
    def fit(self, rfm: pd.DataFrame) -> BtydBaseline:
        """Fit BG/NBD on all customers with history, Gamma-Gamma on repeat buyers.

        Parameters
        ----------
        rfm
            Feature frame (``frequency``, ``recency_days``, ``T_days``, ``monetary_value``) or a
            lifetimes frame; see :func:`to_lifetimes_frame`. Rows with NaN RFM are ignored.

        Returns
        -------
        BtydBaseline
            ``self``, fitted.

        Raises
        ------
        ContractError
            Columns missing or inconsistent.
        InsufficientDataError
            No customer with history, or no repeat purchase at all (BG/NBD has nothing to learn).
        BtydFitError
            The BG/NBD likelihood did not converge even with a 1000x penalty.
        """
        data = to_lifetimes_frame(rfm)
        data = data[data[["frequency", "recency", "T"]].notna().all(axis=1) & (data["T"] > 0)]
        if data.empty:
            raise InsufficientDataError(
                "BG/NBD: no customer with purchase history (T_days > 0) to fit on; "
                "move the cutoff later or load more transactions"
            )
        if not (data["frequency"] > 0).any():
            raise InsufficientDataError(
                f"BG/NBD: none of the {len(data)} customers made a repeat purchase; the model "
                "needs at least one (use a later cutoff or a longer history)"
            )
        if len(data) > self.max_fit_customers:
            data = data.sample(self.max_fit_customers, random_state=self.random_state)
            logger.info("BG/NBD: fitting on a sample of %d customers", len(data))
        self.n_fit_customers_ = len(data)
        self.params_, self.penalizer_used_ = self._fit_bgnbd(data)
        self.gg_params_, self.population_spend_ = self._fit_gamma_gamma(data)
        logger.info(
            "BG/NBD fitted on %d customers: %s (penalizer %g); Gamma-Gamma: %s",
            self.n_fit_customers_,
            self.params_.round(4).to_dict(),
            self.penalizer_used_,
            None if self.gg_params_ is None else self.gg_params_.round(4).to_dict(),
        )
        return self

    def _penalties(self) -> list[float]:
        base = max(self.penalizer, 1e-3)
        return [self.penalizer] + [base * 10.0**k for k in (1, 2, 3)]

    def _fit_bgnbd(self, data: pd.DataFrame) -> tuple[pd.Series, float]:
        # identical (x, t_x, T) rows share one likelihood term: weights make the fit ~2x faster
        from lifetimes import BetaGeoFitter  # heavy import (~2 s), needed to fit only

        patterns = data.groupby(["frequency", "recency", "T"], sort=False).size().reset_index()
        errors: list[str] = []
        for pen in self._penalties():
            fitter = BetaGeoFitter(penalizer_coef=pen)
            try:
                with _quiet():
                    fitter.fit(
                        patterns["frequency"].to_numpy(),
                        patterns["recency"].to_numpy(),
                        patterns["T"].to_numpy(),
                        weights=patterns[0].to_numpy(),
                    )
            except (ValueError, np.linalg.LinAlgError, FloatingPointError) as exc:
                # lifetimes.utils.ConvergenceError subclasses ValueError
                errors.append(f"penalizer {pen:g}: {type(exc).__name__}: {str(exc).strip()}")
                logger.warning("BG/NBD fit failed with penalizer %g; retrying", pen)
                continue
            params = fitter.params_.astype(float)
            if np.isfinite(params.to_numpy()).all() and (params > 0).all():
                return params[["r", "alpha", "a", "b"]], pen
            errors.append(f"penalizer {pen:g}: non-finite parameters {params.to_dict()}")
        raise BtydFitError(
            f"BG/NBD did not converge on {len(data)} customers ({'; '.join(errors)}); check the "
            "RFM features (frequency/recency/T in days) or set a larger `penalizer`"
        )

    def _fit_gamma_gamma(self, data: pd.DataFrame) -> tuple[pd.Series | None, float]:
        from lifetimes import GammaGammaFitter

        buyers = data[(data["frequency"] > 0) & (data["monetary_value"] > 0)]
        if buyers.empty:
            logger.warning("Gamma-Gamma: no repeat buyer with positive spend; spend set to 0")
            return None, 0.0
        mean_spend = float(buyers["monetary_value"].mean())
        if len(buyers) < _MIN_GG_CUSTOMERS:
            logger.warning(
                "Gamma-Gamma: only %d repeat buyers (< %d); using their mean spend %.2f",
                len(buyers),
                _MIN_GG_CUSTOMERS,
                mean_spend,
            )
            return None, mean_spend
        for pen in self._penalties():
            fitter = GammaGammaFitter(penalizer_coef=pen)
            try:
                with _quiet():
                    fitter.fit(buyers["frequency"], buyers["monetary_value"], q_constraint=True)
            except (ValueError, np.linalg.LinAlgError, FloatingPointError):
                logger.warning("Gamma-Gamma fit failed with penalizer %g; retrying", pen)
                continue
            params = fitter.params_.astype(float)[["p", "q", "v"]]
            p, q, v = params.to_numpy()
            if np.isfinite([p, q, v]).all() and q > 1:
                return params, float(v * p / (q - 1))
        logger.warning(
            "Gamma-Gamma did not converge on %d repeat buyers; using their mean spend %.2f",
            len(buyers),
            mean_spend,
        )
        return None, mean_spend

    # ------------------------------------------------------------------ predict
    def _check_fitted(self) -> None:
        if not hasattr(self, "params_"):
            raise RetentioError(
                "BtydBaseline is not fitted; call fit(features) before predict(features)"
            )

    def predict(
        self,
        features: pd.DataFrame,
        *,
        horizon_days: int,
        annual_discount_rate: float = 0.0,
    ) -> pd.DataFrame:
        """Score every customer: P(alive), purchases, spend, CLV and P(no purchase) over a horizon.

        Parameters
        ----------
        features
            Feature or lifetimes frame as for :meth:`fit`; the index is kept.
        horizon_days
            Length ``h`` of the prediction window after the cutoff, in days (> 0).
        annual_discount_rate
            Yearly rate ``d`` for the CLV; purchases expected in each 30-day step are discounted
            by ``(1 + d) ** (-mid_step_days / 365)``. 0 means no discounting.

        Returns
        -------
        pd.DataFrame
            Indexed like ``features``, with columns

            - ``p_alive``: P(customer still active at the cutoff) [2]_; 1 for ``frequency == 0``
              (in BG/NBD a customer can only drop out right after a repeat purchase);
            - ``expected_purchases``: E[repeat purchases in (T, T + h]] (eq. 10 of [1]_);
            - ``expected_spend``: Gamma-Gamma conditional expected spend per purchase [4]_;
              ``population_spend_`` for customers without repeat purchase or with spend <= 0;
            - ``clv``: ``expected_purchases * expected_spend``, discounted when ``d > 0``;
            - ``p_churn``: P(no purchase in (T, T + h]) =
              ``(1 - p_alive) + p_alive * ((alpha + T) / (alpha + T + h)) ** (r + x)``:
              given alive, the posterior of the purchase rate is Gamma(r + x, alpha + T) and a
              living customer who buys nothing cannot drop out, so P(0 in h | alive) is the
              Gamma mixture of exp(-lambda h) [1]_.

            Rows without history (NaN RFM) are NaN in every column.

        Raises
        ------
        RetentioError
            The model is not fitted.
        ContractError
            Columns missing/inconsistent, ``horizon_days <= 0`` or a negative discount rate.
        """
        self._check_fitted()
        if horizon_days <= 0:
            raise ContractError(f"BG/NBD predict: horizon_days must be > 0, got {horizon_days}")
        if annual_discount_rate < 0:
            raise ContractError(
                f"BG/NBD predict: annual_discount_rate must be >= 0, got {annual_discount_rate}"
            )
        data = to_lifetimes_frame(features)
        x = data["frequency"].to_numpy(dtype=float)
        t_x = data["recency"].to_numpy(dtype=float)
        T = data["T"].to_numpy(dtype=float)
        m = data["monetary_value"].to_numpy(dtype=float)
        valid = np.isfinite(x) & np.isfinite(t_x) & np.isfinite(T)
        out = np.full((len(data), len(OUTPUT_COLUMNS)), np.nan)
        if valid.any():
            x, t_x, T, m = x[valid], t_x[valid], T[valid], m[valid]
            p_alive = self._p_alive(x, t_x, T)
            purchases = self._expected_purchases(float(horizon_days), x, t_x, T)
            spend = self._expected_spend(x, m)
            if annual_discount_rate > 0:
                clv = spend * self._discounted_purchases(
                    horizon_days, annual_discount_rate, x, t_x, T, purchases
                )
            else:
                clv = spend * purchases
            r, alpha = self.params_["r"], self.params_["alpha"]
            p_none_if_alive = np.exp((r + x) * np.log((alpha + T) / (alpha + T + horizon_days)))
            p_churn = (1.0 - p_alive) + p_alive * p_none_if_alive
            out[valid] = np.column_stack([p_alive, purchases, spend, clv, p_churn])
        result = pd.DataFrame(out, index=features.index, columns=OUTPUT_COLUMNS)
        result["clv"] = result["clv"].clip(lower=0.0)
        result[["p_alive", "p_churn"]] = result[["p_alive", "p_churn"]].clip(0.0, 1.0)
        return result

    def _p_alive(self, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
        # P(alive) = 1 / (1 + a / (b + x - 1) * ((alpha + T) / (alpha + t_x)) ** (r + x)), x > 0
        r, alpha, a, b = self.params_[["r", "alpha", "a", "b"]].to_numpy()
        log_odds_dead = (r + x) * np.log((alpha + T) / (alpha + t_x)) + np.log(
            a / (b + np.maximum(x, 1) - 1)
        )
        return np.where(x == 0, 1.0, expit(-log_odds_dead))

    def _expected_purchases(
        self, t: float | np.ndarray, x: np.ndarray, t_x: np.ndarray, T: np.ndarray
    ) -> np.ndarray:
        # eq. (10) of Fader, Hardie & Lee (2005), with lifetimes' fallback when 2F1 overflows
        r, alpha, a, b = self.params_[["r", "alpha", "a", "b"]].to_numpy()
        aa, bb, cc = r + x, b + x, a + b + x - 1
        z = t / (alpha + T + t)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            ln_hyp = np.array(np.log(hyp2f1(aa, bb, cc, z)), dtype=float)
            bad = ~np.isfinite(ln_hyp)  # the other form only where this one overflowed
            if bad.any():
                a2, b2, c2, z2 = (np.broadcast_to(v, ln_hyp.shape)[bad] for v in (aa, bb, cc, z))
                ln_hyp[bad] = np.log(hyp2f1(c2 - a2, c2 - b2, c2, z2)) + (c2 - a2 - b2) * np.log1p(
                    -z2
                )
        first = (a + b + x - 1) / (a - 1)
        second = 1 - np.exp(ln_hyp + (r + x) * np.log((alpha + T) / (alpha + t + T)))
        denom = 1 + (x > 0) * (a / (b + np.maximum(x, 1) - 1)) * ((alpha + T) / (alpha + t_x)) ** (
            r + x
        )
        # A customer who never drops out buys E[lambda | x, T] * t = (r + x) / (alpha + T) * t;
        # dropout can only lower that. With a <= 1 the closed form is unbounded (the (a - 1)
        # denominator), which gave CLVs of 1e11 on a real snapshot: bound it.
        bound = (r + x) / (alpha + T) * t
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            value = first * second / denom
        value = np.where(np.isfinite(value) & (value >= 0), value, bound)
        return np.minimum(value, bound)

    def _expected_spend(self, x: np.ndarray, m: np.ndarray) -> np.ndarray:
        pop = self.population_spend_
        repeat = (x > 0) & np.isfinite(m) & (m > 0)
        if self.gg_params_ is None:  # no Gamma-Gamma: everyone gets the mean spend
            return np.full_like(x, pop)
        p, q, _ = self.gg_params_.to_numpy()
        # E[Z | x, m] = (1 - w) * population mean + w * m, w = p x / (p x + q - 1)
        w = p * x / (p * x + q - 1)
        return np.where(repeat, (1 - w) * pop + w * np.where(repeat, m, 0.0), pop)

    def _discounted_purchases(
        self,
        horizon_days: int,
        rate: float,
        x: np.ndarray,
        t_x: np.ndarray,
        T: np.ndarray,
        total: np.ndarray,
    ) -> np.ndarray:
        edges = np.unique(np.append(np.arange(0, horizon_days, _DISCOUNT_STEP_DAYS), horizon_days))
        cumulative = [np.zeros_like(x)]
        cumulative += [self._expected_purchases(float(e), x, t_x, T) for e in edges[1:-1]]
        cumulative.append(total)
        increments = np.diff(np.vstack(cumulative), axis=0)
        mid_years = (edges[:-1] + edges[1:]) / 2 / 365.0
        factors = (1.0 + rate) ** (-mid_years)
        return factors @ increments


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence lifetimes: it prints the optimiser result on failure and warns on overflow."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
