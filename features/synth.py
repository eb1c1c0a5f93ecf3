"""Synthetic CRM data: transactions, customers, surveys and interactions with real signal.

The generative story (one latent process per customer, fully vectorised over customers):

1. **Acquisition.** Customers sign up between ``start`` and ``end``: an established cohort in the
   first weeks, then a steady inflow. Each gets static attributes (``acquisition_channel``,
   ``region``, ``age_band``); after ``drift_date`` a new channel (``tiktok``) appears. With
   ``cohort_days`` the cohort is closed: everyone signs up in the first ``cohort_days`` days.
2. **Latent traits.** A purchase rate ``lambda ~ Gamma`` and a dropout probability
   ``p ~ Beta`` (BG/NBD), a mean order value ``~ Gamma`` (Gamma-Gamma), all shifted by the
   attributes (referral customers churn less, older ones spend more, ...). A latent *attitude*
   is drawn through a Gaussian copula on ``p``: satisfied, trusting customers drop out less.
3. **Purchases.** The first order is on the signup day. Repeat orders follow a Poisson process
   with rate ``lambda * s(t)``, where ``s`` carries the weekly and yearly seasonality (busy
   weekends, Nov-Dec peak) and the post-drift rate change; times are drawn exactly by a time
   change of a unit-rate process (equivalent to thinning, without the rejected draws).
   After each order the customer becomes inactive with probability ``p``; an unresolved
   complaint about an order raises that probability for that and every later decision, a
   resolved one slightly. Orders have 1-k lines (category, quantity, margin) and a channel.
4. **Returns.** A few % of lines (more in fashion) are refunded 1-30 days later: a line with the
   negative amount, quantity and margin, order id ``R...`` mirroring the original ``O...``.
5. **Interactions.** Complaints (resolved or not) and support contacts follow orders; calls and
   site/app/store visits happen while the customer is active; e-mail campaigns reach a random
   share of signed-up customers and are opened / clicked more by engaged, still active ones.
6. **Surveys.** A panel answers occasional waves while still active (so answers precede the
   dropout): satisfaction, NPS, repurchase intention, trust (credibility, benevolence), switching
   cost and attractiveness of alternatives, all noisy readings of the latent attitude, lowered
   after an unresolved complaint.
7. **Drift.** After ``drift_date`` order values are ~1.5x, the purchase rate is 0.8x and 30 % of
   new customers come from ``tiktok`` (who churn more and spend less); :class:`Drift` sets each
   of the three sizes (1, 1 and 0 switch one off), so a drift of one kind and size can be
   injected on its own.

Every event falls on a day in ``[start, end]`` (``timestamp < end + 1 day``). Same arguments give
identical frames: every component draws from its own stream spawned from ``seed``.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from scipy import special

from retentio.errors import ConfigError
from retentio.features.cutoff import as_cutoff
from retentio.features.schema import TABLES, Tables

logger = logging.getLogger(__name__)

__all__ = ["Drift", "generate_crm", "write_tables"]

_SECONDS_PER_DAY = 86_400
_ISO = "%Y-%m-%dT%H:%M:%S"

# --- acquisition and static attributes ------------------------------------------------------
_EARLY_SHARE = 0.35  # share of customers in the established cohort (signed up early)
_EARLY_DAYS = 60  # ... within this many days of ``start``
_CHANNELS = ("search", "social", "referral", "affiliate", "tiktok")
_CHANNEL_WEIGHTS = np.array([0.38, 0.27, 0.17, 0.18, 0.0])
_NEW_CHANNEL_SHARE = 0.30  # share of tiktok among signups after the drift date
# multipliers: odds of dropout, purchase rate, mean spend
_CHANNEL_P = np.array([1.0, 1.5, 0.45, 1.2, 1.8])
_CHANNEL_LAMBDA = np.array([1.0, 0.9, 1.2, 0.95, 1.1])
_CHANNEL_SPEND = np.array([1.0, 0.9, 1.1, 0.85, 0.7])
_REGIONS = ("north", "south", "east", "west")
_REGION_WEIGHTS = np.array([0.3, 0.25, 0.2, 0.25])
_REGION_P = np.array([1.0, 1.1, 0.95, 1.0])
_REGION_LAMBDA = np.array([1.0, 0.95, 1.05, 1.0])
_REGION_SPEND = np.array([1.1, 0.9, 1.0, 1.05])
_AGE_BANDS = ("18-24", "25-34", "35-44", "45-54", "55+")
_AGE_WEIGHTS = np.array([0.15, 0.27, 0.25, 0.18, 0.15])
_AGE_P = np.array([1.3, 1.1, 1.0, 0.85, 0.8])
_AGE_LAMBDA = np.array([1.1, 1.05, 1.0, 0.95, 0.9])
_AGE_SPEND = np.array([0.7, 0.9, 1.05, 1.2, 1.1])

# --- latent traits --------------------------------------------------------------------------
_LAMBDA_SHAPE, _LAMBDA_MEAN = 3.0, 1 / 35  # purchases per day (before seasonality)
_P_A, _P_B = 2.0, 55.0  # Beta dropout probability, mean ~0.035
_SPEND_SHAPE, _SPEND_MEAN = 3.0, 55.0  # per-customer mean order value (Gamma)
_ORDER_SHAPE = 4.0  # per-order value ~ Gamma(shape, mean / shape)
_ATTITUDE_CORR = 0.85  # |corr| between the attitude and the dropout copula
_ATTITUDE_RATE = 0.3  # purchase rate x exp(this * attitude): the satisfied also buy more

# --- seasonality (Mon..Sun; Jan..Dec) and intraday profile (hours 0..23) --------------------
_WEEKDAY = np.array([0.92, 0.9, 0.95, 1.0, 1.1, 1.18, 0.95])
_MONTH = np.array([0.85, 0.85, 0.95, 0.95, 1.0, 0.95, 0.9, 0.85, 0.95, 1.0, 1.35, 1.6])
_HOURS = np.array(
    [0.2, 0.1, 0.1, 0.1, 0.1, 0.2, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0,
     3.5, 3.2, 2.8, 2.6, 2.8, 3.2, 3.8, 4.2, 4.0, 3.0, 1.8, 0.8]
)  # fmt: skip

# --- drift ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Drift:
    """What changes after the drift date (the default is the demo drift: all three at once).

    Attributes
    ----------
    spend
        Multiplier of every order value (1.0: no spend drift).
    rate
        Multiplier of every customer's purchase rate (1.0: no frequency drift).
    new_channel_share
        Share of the customers signing up after the drift date who come from the new
        acquisition channel ``tiktok`` (0.0: no new channel).
    """

    spend: float = 1.5
    rate: float = 0.8
    new_channel_share: float = _NEW_CHANNEL_SHARE

    def __post_init__(self) -> None:
        if not (self.spend > 0 and self.rate > 0 and 0 <= self.new_channel_share <= 1):
            raise ConfigError(
                f"synth: drift sizes must be spend > 0, rate > 0 and 0 <= new_channel_share <= 1, "
                f"got spend={self.spend}, rate={self.rate}, "
                f"new_channel_share={self.new_channel_share}"
            )


_NO_DRIFT = Drift(spend=1.0, rate=1.0, new_channel_share=0.0)

# --- orders, lines, returns -----------------------------------------------------------------
_SALES_CHANNELS = ("web", "store", "app")
_CATEGORIES = ("fashion", "electronics", "home", "beauty", "grocery", "sports")
_CATEGORY_WEIGHTS = np.array([0.25, 0.12, 0.2, 0.15, 0.18, 0.1])
_CATEGORY_MARGIN = np.array([0.45, 0.12, 0.3, 0.5, 0.15, 0.3])
_CATEGORY_RETURN = np.array([0.08, 0.04, 0.025, 0.015, 0.005, 0.03])
_EXTRA_LINES_MEAN = 0.35  # lines per order = 1 + Poisson(this), capped
_MAX_LINES = 8
_FAVOURITE_SHARE = 0.5  # share of lines in the customer's favourite category

# --- interactions and surveys ---------------------------------------------------------------
_COMPLAINT_RATE = 0.035  # per order, scaled by exp(-0.5 * attitude)
_RESOLVED_SHARE = 0.65
_UNRESOLVED_DROP = 0.3  # extra dropout chance per decision after an unresolved complaint
_RESOLVED_DROP = 0.05  # ... after a resolved one
_SUPPORT_RATE = 0.05  # per order
_CALL_RATE = 0.1  # calls per expected purchase while active
_VISIT_RATE = 0.8  # visits per expected purchase while active
_EMAIL_EVERY_DAYS = 30
_EMAIL_REACH = 0.25  # share of signed-up customers in one campaign
_SURVEY_FIRST_DAY, _SURVEY_EVERY_DAYS = 75, 120
_SURVEY_PANEL = 0.35  # share of customers in the survey panel
_SURVEY_RESPONSE = 0.5  # response rate of active panel members to one wave
_SURVEY_UNRESOLVED_SHIFT = -0.9  # attitude shift after an unresolved complaint
_CONTACT_CHANNELS = ("email", "phone", "chat", "web", "store", "app")  # interaction channel


def generate_crm(
    *,
    n_customers: int,
    start: str | dt.date,
    end: str | dt.date,
    seed: int,
    drift_date: str | dt.date | None = None,
    cohort_days: int | None = None,
    drift: Drift | None = None,
    id_offset: int = 0,
    id_width: int | None = None,
) -> Tables:
    """Generate a synthetic CRM (the four tables of the contract) with realistic behaviour.

    Parameters
    ----------
    n_customers : int
        Number of customers; about 12 transaction lines each on a 2.5-year window.
    start, end : str or date
        First and last day of the simulated period; every event falls on a day in
        ``[start, end]`` (``timestamp < end + 1 day``).
    seed : int
        Seed of every random draw; the same arguments give identical frames.
    drift_date : str or date, optional
        After this day order values are ~1.5x, the purchase rate 0.8x, and the acquisition
        channel ``tiktok`` appears for new customers. ``None``: no drift.
    cohort_days : int, optional
        A closed cohort: every customer signs up in the first ``cohort_days`` days, uniformly
        (the classic BTYD setting, where the whole population only ages). ``None``: the default
        acquisition (an early cohort, then a steady inflow until ``end``).
    drift : Drift, optional
        The sizes of the drift after ``drift_date`` (default ``Drift()``: the three changes
        above); ignored without ``drift_date``.
    id_offset, id_width : int, optional
        Number the customers from ``id_offset`` with ``id_width`` digits (default: 0 and the
        digits ``n_customers`` needs), so that chunks of one large population generated
        separately (``features.partition.synth_partitioned``) never share an id.

    Returns
    -------
    Tables
        ``transactions``, ``customers``, ``surveys`` and ``interactions`` in the canonical
        in-memory form of ``features.schema`` (string ids, naive ``datetime64[ns]``, ``float64``
        scores), ``name="synthetic"``.

    Raises
    ------
    ConfigError
        ``n_customers`` is not positive, a date does not parse, ``end`` is before ``start``, or
        ``cohort_days`` is not positive.
    """
    if int(n_customers) <= 0:
        raise ConfigError(f"synth: n_customers must be positive, got {n_customers}")
    if cohort_days is not None and int(cohort_days) <= 0:
        raise ConfigError(f"synth: --cohort-days must be positive, got {cohort_days}")
    t_start, t_end = as_cutoff(start), as_cutoff(end)
    if t_end < t_start:
        raise ConfigError(f"synth: end {t_end.date()} is before start {t_start.date()}; swap them")
    n_days = int((t_end - t_start).days) + 1
    drift_day = np.inf
    change = _NO_DRIFT if drift_date is None else (drift or Drift())
    if drift_date is not None:
        drift_day = float((as_cutoff(drift_date) - t_start).days)
        if not 0 < drift_day < n_days:
            logger.warning(
                "synth: drift_date %s is outside (%s, %s]; it has no effect",
                as_cutoff(drift_date).date(),
                t_start.date(),
                t_end.date(),
            )

    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(6)]
    width = id_width or max(7, len(str(id_offset + n_customers - 1)))
    ids = _ids("C", np.arange(id_offset, id_offset + n_customers), width)
    cust = _customers(streams[0], int(n_customers), n_days, drift_day, change, cohort_days)
    season = _daily_intensity(t_start, n_days, drift_day, change)
    orders = _purchases(streams[1], cust, season, n_days)
    # build each frame as soon as its arrays are complete, and drop the arrays (peak memory)
    lines = _lines(streams[2], cust, orders, n_days, drift_day, change)
    transactions = _transactions_frame(lines, ids, t_start)
    del lines
    inter = _interactions(streams[3], cust, orders, n_days)
    surveys = _surveys(streams[4], cust, orders, inter, n_days)
    interactions = _interactions_frame(inter, ids, t_start)
    del inter
    survey_frame = _surveys_frame(surveys, ids, t_start)
    tables = Tables(
        transactions=transactions,
        customers=_customers_frame(cust, ids, t_start),
        surveys=survey_frame,
        interactions=interactions,
        name="synthetic",
    )
    logger.info(
        "synth: %d customers, %d transaction lines, %d survey answers, %d interactions",
        n_customers, len(transactions), len(survey_frame), len(interactions),
    )  # fmt: skip
    return tables


def write_tables(
    tables: Tables, out_dir: Path, *, fmt: Literal["csv", "parquet"] = "csv"
) -> dict[str, Path]:
    """Write each present table to ``out_dir/<table>.<fmt>``.

    Parameters
    ----------
    tables : Tables
        The tables to write (absent optional tables are skipped).
    out_dir : Path
        Folder to write into; created if missing.
    fmt : {"csv", "parquet"}
        File format. CSV timestamps are ISO 8601 (``2024-11-29T18:03:12``).

    Returns
    -------
    dict of str to Path
        Table name -> file written.

    Raises
    ------
    ConfigError
        ``fmt`` is neither ``"csv"`` nor ``"parquet"``.
    """
    if fmt not in ("csv", "parquet"):
        raise ConfigError(f"synth: unknown output format {fmt!r}; use 'csv' or 'parquet'")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for name, frame in tables.items():
        path = out_dir / f"{name}.{fmt}"
        if fmt == "csv":
            frame.to_csv(path, index=False, date_format=_ISO)
        else:
            frame.to_parquet(path, index=False)
        written[name] = path
        logger.info("synth: wrote %d rows to %s", len(frame), path)
    return written


# ---------------------------------------------------------------------------------------------
# flat-array helpers (events of all customers in one array, grouped by customer)
# ---------------------------------------------------------------------------------------------


def _group_starts(counts: np.ndarray) -> np.ndarray:
    """Offset of each group's first element in the flat array."""
    starts = np.zeros(len(counts), dtype=np.int64)
    np.cumsum(counts[:-1], out=starts[1:])
    return starts


def _rank_in_group(counts: np.ndarray) -> np.ndarray:
    """0, 1, ... within each group of the flat array."""
    total = int(counts.sum())
    return np.arange(total, dtype=np.int64) - np.repeat(_group_starts(counts), counts)


def _group_cumsum(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Inclusive cumulative sum restarting at each group."""
    cs = np.cumsum(values)
    before = np.concatenate([[0], cs])[_group_starts(counts)]
    return cs - np.repeat(before, counts)


def _ids(prefix: str, numbers: np.ndarray, width: int) -> np.ndarray:
    """``prefix`` + zero-padded numbers, as an object array of ``str`` (no Python loop)."""
    rest = np.asarray(numbers, dtype=np.int64).copy()
    buf = np.empty((len(rest), width + 1), dtype=np.uint32)  # UCS-4 code points
    buf[:, 0] = ord(prefix)
    for pos in range(width, 0, -1):  # one digit column at a time (width steps, not rows)
        buf[:, pos] = rest % 10 + ord("0")
        rest //= 10
    return buf.view(f"<U{width + 1}").ravel().astype(object)


def _event_seconds(days: np.ndarray) -> np.ndarray:
    """Fractional days since the start -> whole seconds, the within-day time warped through the
    hourly profile (monotone within a day, so the order of events is kept)."""
    cdf = np.concatenate([[0.0], np.cumsum(_HOURS) / _HOURS.sum()])
    day = np.floor(days)
    warped = np.interp(days - day, cdf, np.linspace(0.0, 1.0, 25))
    warped += day
    warped *= _SECONDS_PER_DAY
    return np.floor(warped, out=warped).astype(np.int64)


def _as_datetime(seconds: np.ndarray, t_start: pd.Timestamp) -> np.ndarray:
    """Seconds since ``t_start`` -> naive ``datetime64[ns]``."""
    return (t_start.to_datetime64().astype("datetime64[s]") + seconds).astype("datetime64[ns]")


# ---------------------------------------------------------------------------------------------
# the generative steps
# ---------------------------------------------------------------------------------------------


def _customers(
    rng: np.random.Generator,
    n: int,
    n_days: int,
    drift_day: float,
    change: Drift,
    cohort_days: int | None = None,
) -> dict[str, np.ndarray]:
    """Signup day, static attributes and latent traits of every customer.

    ``cohort_days`` (a closed cohort) draws every signup uniformly in the first ``cohort_days``
    days; the draws consumed are the same either way, so the other traits do not change.
    """
    early = rng.random(n) < _EARLY_SHARE
    early_day = rng.integers(0, min(_EARLY_DAYS, n_days), n)
    late_day = rng.integers(0, n_days, n)
    if cohort_days is not None:
        signup = np.floor(late_day * (min(int(cohort_days), n_days) / n_days)).astype(np.int64)
    else:
        signup = np.where(early, early_day, late_day)
    weights = _CHANNEL_WEIGHTS / _CHANNEL_WEIGHTS.sum()
    channel = rng.choice(len(_CHANNELS), size=n, p=weights)
    new_channel = (signup >= drift_day) & (rng.random(n) < change.new_channel_share)
    channel = np.where(new_channel, _CHANNELS.index("tiktok"), channel)
    region = rng.choice(len(_REGIONS), size=n, p=_REGION_WEIGHTS)
    age = rng.choice(len(_AGE_BANDS), size=n, p=_AGE_WEIGHTS)

    # dropout p ~ Beta, shifted on the odds scale; z = its normal score (the copula)
    p0 = rng.beta(_P_A, _P_B, n)
    z = special.ndtri(np.clip(special.betainc(_P_A, _P_B, p0), 1e-9, 1 - 1e-9))
    odds = p0 / (1 - p0) * _CHANNEL_P[channel] * _REGION_P[region] * _AGE_P[age]
    p = np.clip(odds / (1 + odds), 0.005, 0.95)
    attitude = -_ATTITUDE_CORR * z + np.sqrt(1 - _ATTITUDE_CORR**2) * rng.standard_normal(n)
    switching = -0.45 * z + 0.9 * rng.standard_normal(n)
    alternatives = 0.45 * z + 0.9 * rng.standard_normal(n)

    lam = rng.gamma(_LAMBDA_SHAPE, _LAMBDA_MEAN / _LAMBDA_SHAPE, n)
    lam *= _CHANNEL_LAMBDA[channel] * _REGION_LAMBDA[region] * _AGE_LAMBDA[age]
    lam *= np.exp(_ATTITUDE_RATE * attitude - _ATTITUDE_RATE**2 / 2)
    spend = rng.gamma(_SPEND_SHAPE, _SPEND_MEAN / _SPEND_SHAPE, n)
    spend *= _CHANNEL_SPEND[channel] * _REGION_SPEND[region] * _AGE_SPEND[age]

    # sales channel preference: the young lean to the app, the old to the store
    pref_app = np.array([0.45, 0.35, 0.2, 0.12, 0.08])[age]
    pref_store = np.array([0.15, 0.2, 0.3, 0.38, 0.45])[age]
    u = rng.random(n)
    sales_channel = np.where(u < pref_app, 2, np.where(u < pref_app + pref_store, 1, 0))
    return {
        "signup": signup.astype(np.int64),
        "t0": signup + rng.random(n),  # first order, raw (uniform) within-day time
        "channel": channel,
        "region": region,
        "age": age,
        "p": p,
        "lam": lam,
        "spend": spend,
        "attitude": attitude,
        "switching": switching,
        "alternatives": alternatives,
        "complaint_rate": np.clip(_COMPLAINT_RATE * np.exp(-0.5 * attitude), 0, 0.3),
        "favourite": rng.choice(len(_CATEGORIES), size=n, p=_CATEGORY_WEIGHTS),
        "sales_channel": sales_channel,
        "panel": rng.random(n) < _SURVEY_PANEL,
    }


def _daily_intensity(
    t_start: pd.Timestamp, n_days: int, drift_day: float, change: Drift
) -> np.ndarray:
    """Seasonal purchase-rate multiplier of each day (weekday x month x drift)."""
    dates = pd.date_range(t_start, periods=n_days, freq="D")
    s = _WEEKDAY[dates.dayofweek.to_numpy()] * _MONTH[dates.month.to_numpy() - 1]
    return np.where(np.arange(n_days) >= drift_day, s * change.rate, s)


def _purchases(
    rng: np.random.Generator, cust: dict[str, np.ndarray], season: np.ndarray, n_days: int
) -> dict[str, np.ndarray]:
    """Order times per customer with BG/NBD dropout and complaint-driven extra dropout.

    Repeat orders are a Poisson process of rate ``lam * season(t)``. In the cumulative-intensity
    scale ``S`` it is homogeneous: with ``N`` events in the window, the first ``m`` are the
    first ``m`` uniform order statistics, drawn as ``cumsum(Exp) / (cumsum + Gamma(N + 1 - m))``
    and mapped back through ``S^-1``. Only ``m = min(N, J)`` are drawn, where ``J`` is the
    base geometric number of repeat orders before dropout.
    """
    n = len(cust["p"])
    cum = np.concatenate([[0.0], np.cumsum(season)])  # S at the start of each day

    t0 = cust["t0"]
    day0 = cust["signup"]
    s_t0 = cum[day0] + season[day0] * (t0 - day0)
    span = cum[-1] - s_t0  # intensity mass from the first order to the end
    n_window = rng.poisson(cust["lam"] * span)
    n_alive = rng.geometric(cust["p"]) - 1  # repeat orders before the base dropout
    m = np.minimum(n_window, n_alive)

    # the first m of n_window ordered uniforms, in intensity scale
    gaps = rng.exponential(1.0, int(m.sum()))
    cs = _group_cumsum(gaps, m)
    tail = rng.gamma(n_window - m + 1.0)
    last = np.zeros(n)
    has = m > 0
    last[has] = cs[_group_starts(m)[has] + m[has] - 1]
    owner = np.repeat(np.arange(n, dtype=np.int32), m)
    u = cs / (last + tail)[owner]
    s_val = s_t0[owner] + u * span[owner]
    day = np.clip(np.searchsorted(cum, s_val, side="right") - 1, 0, n_days - 1)
    t_rep = day + np.clip((s_val - cum[day]) / season[day], 0.0, 1.0 - 1e-9)

    # all orders incl. the first: k = 0..m per customer, flat and grouped by customer
    counts = m + 1
    cust_idx = np.repeat(np.arange(n, dtype=np.int32), counts)
    k = _rank_in_group(counts)
    t = np.empty(len(cust_idx))
    first = k == 0
    t[first] = t0
    t[~first] = t_rep

    # complaint after an order; its severity raises later dropout decisions (coupled exactly:
    # a decision that survived the base p drops with the extra chance f)
    complaint = rng.random(len(t)) < cust["complaint_rate"][cust_idx]
    resolved = rng.random(len(t)) < _RESOLVED_SHARE
    severity = np.where(complaint, np.where(resolved, 1, 2), 0)
    key = np.maximum.accumulate(cust_idx * 4 + severity)
    state = key - cust_idx * 4  # worst complaint so far (0 none, 1 resolved, 2 unresolved)
    extra = np.array([0.0, _RESOLVED_DROP, _UNRESOLVED_DROP])[state]
    base_drop = (k == n_alive[cust_idx]) & (k == m[cust_idx])
    drop = base_drop | (rng.random(len(t)) < extra)
    dropped_before = _group_cumsum(drop.astype(np.int64), counts) - drop
    keep = dropped_before == 0

    cust_idx, t, drop = cust_idx[keep], t[keep], drop[keep]
    complaint, resolved = complaint[keep], resolved[keep]
    # active until the order after which they dropped out, else to the end
    active_until = np.full(n, float(n_days))
    active_until[cust_idx[drop]] = t[drop]
    logger.debug("synth: %d orders, %d customers dropped out", len(t), int(drop.sum()))
    return {
        "cust": cust_idx,
        "t": t,
        "complaint": complaint,
        "resolved": resolved,
        "active_until": active_until,
    }


def _lines(
    rng: np.random.Generator,
    cust: dict[str, np.ndarray],
    orders: dict[str, np.ndarray],
    n_days: int,
    drift_day: float,
    change: Drift,
) -> dict[str, np.ndarray]:
    """Order lines (amount, quantity, category, channel, margin) plus return lines."""
    o_cust, o_t = orders["cust"], orders["t"]
    n_orders = len(o_t)
    value = rng.gamma(_ORDER_SHAPE, cust["spend"][o_cust] / _ORDER_SHAPE)
    value = np.where(o_t >= drift_day, value * change.spend, value)
    u = rng.random(n_orders)
    channel = np.where(u < 0.7, cust["sales_channel"][o_cust], rng.integers(0, 3, n_orders))
    channel = channel.astype(np.int8)

    n_lines = 1 + np.minimum(rng.poisson(_EXTRA_LINES_MEAN, n_orders), _MAX_LINES - 1)
    order_of = np.repeat(np.arange(n_orders, dtype=np.int32), n_lines)
    share = rng.gamma(1.5, 1.0, len(order_of))
    share /= np.bincount(order_of, weights=share)[order_of]
    amount = _distinct_within_orders(np.maximum(value[order_of] * share, 0.5), order_of)
    quantity = 1.0 + rng.poisson(0.5, len(order_of))
    line_cust = o_cust[order_of]
    favourite = rng.random(len(order_of)) < _FAVOURITE_SHARE
    category = np.where(
        favourite,
        cust["favourite"][line_cust],
        rng.choice(len(_CATEGORIES), size=len(order_of), p=_CATEGORY_WEIGHTS),
    ).astype(np.int8)
    margin = np.round(amount * _CATEGORY_MARGIN[category] * rng.uniform(0.8, 1.2, len(amount)), 2)
    t = o_t[order_of]

    # returns: a refund 1-30 days later of the whole line
    is_ret = rng.random(len(order_of)) < _CATEGORY_RETURN[category]
    r_t = t[is_ret] + rng.uniform(1.0, 30.0, int(is_ret.sum()))
    ok = r_t < n_days
    ret = np.flatnonzero(is_ret)[ok]
    return {
        "cust": np.concatenate([line_cust, line_cust[ret]]),
        "t": np.concatenate([t, r_t[ok]]),
        "order": np.concatenate([order_of, order_of[ret]]),
        "is_return": np.concatenate([np.zeros(len(t), bool), np.ones(len(ret), bool)]),
        "n_orders": np.array(n_orders),
        "amount": np.concatenate([amount, -amount[ret]]),
        "quantity": np.concatenate([quantity, -quantity[ret]]),
        "category": np.concatenate([category, category[ret]]),
        "channel": np.concatenate([channel[order_of], channel[order_of][ret]]),
        "margin": np.concatenate([margin, -margin[ret]]),
    }


def _distinct_within_orders(amount: np.ndarray, order_of: np.ndarray) -> np.ndarray:
    """Round to cents so that no two lines of one order have the same amount (no duplicate
    rows): a later line equal to an earlier one of its order moves up by a cent."""
    cents = np.round(amount * 100).astype(np.int64)
    changed = True
    while changed:  # a handful of lines per million; converges in one or two passes
        changed = False
        for lag in range(1, _MAX_LINES):  # lines of an order are contiguous, at most _MAX_LINES
            same = (order_of[lag:] == order_of[:-lag]) & (cents[lag:] == cents[:-lag])
            if same.any():
                cents[lag:][same] += 1
                changed = True
    return cents / 100.0


def _poisson_events(
    rng: np.random.Generator, rate: np.ndarray, begin: np.ndarray, stop: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Homogeneous Poisson events per customer on ``[begin, stop)``: (customer, time)."""
    width = np.maximum(stop - begin, 0.0)
    counts = rng.poisson(rate * width)
    owner = np.repeat(np.arange(len(rate), dtype=np.int32), counts)
    return owner, begin[owner] + rng.random(len(owner)) * width[owner]


def _interactions(
    rng: np.random.Generator,
    cust: dict[str, np.ndarray],
    orders: dict[str, np.ndarray],
    n_days: int,
) -> dict[str, np.ndarray]:
    """Complaints, support, calls, visits and e-mail events (type codes index the names)."""
    parts: list[tuple[np.ndarray, np.ndarray, str, np.ndarray, np.ndarray]] = []

    def add(owner: np.ndarray, t: np.ndarray, kind: str, chan: np.ndarray, res: np.ndarray) -> None:
        ok = t < n_days
        parts.append((owner[ok], t[ok], kind, chan[ok], res[ok]))

    o_cust, o_t = orders["cust"], orders["t"]
    c = orders["complaint"]
    nc = int(c.sum())
    # complaint channel codes index _CONTACT_CHANNELS: email, phone, chat
    add(o_cust[c], o_t[c] + 0.1 + rng.exponential(3.0, nc), "complaint",
        rng.integers(0, 3, nc), np.where(orders["resolved"][c], 1, 0))  # fmt: skip
    sup = rng.random(len(o_t)) < _SUPPORT_RATE
    ns = int(sup.sum())
    add(o_cust[sup], o_t[sup] + rng.exponential(5.0, ns), "support",
        rng.integers(0, 3, ns), np.full(ns, -1))  # fmt: skip

    begin, until = cust["t0"], orders["active_until"]
    owner, t = _poisson_events(rng, _CALL_RATE * cust["lam"], begin, until)
    add(owner, t, "call", np.full(len(owner), 1), np.full(len(owner), -1))
    owner, t = _poisson_events(rng, _VISIT_RATE * cust["lam"], begin, until)
    # visits where the customer shops: sales channel web / store / app -> contact codes 3 / 4 / 5
    add(owner, t, "visit", 3 + cust["sales_channel"][owner], np.full(len(owner), -1))

    # e-mail campaigns: engaged, still active customers open and click more
    n = len(cust["p"])
    for day in range(_EMAIL_EVERY_DAYS // 2, n_days, _EMAIL_EVERY_DAYS):
        target = np.flatnonzero((cust["signup"] < day) & (rng.random(n) < _EMAIL_REACH))
        t_sent = day + 0.35 + 0.05 * rng.random(len(target))
        active = until[target] > t_sent
        p_open = special.expit(-1.9 + 0.8 * cust["attitude"][target] + 1.2 * active)
        opened = rng.random(len(target)) < p_open
        p_click = special.expit(-1.6 + 0.6 * cust["attitude"][target] + 0.8 * active)
        clicked = opened & (rng.random(len(target)) < p_click)
        t_open = t_sent + rng.exponential(0.5, len(target))
        t_click = t_open + rng.exponential(0.01, len(target))
        email = np.full(len(target), 0)
        none = np.full(len(target), -1)
        add(target, t_sent, "email_sent", email, none)
        add(target[opened], t_open[opened], "email_open", email[opened], none[opened])
        add(target[clicked], t_click[clicked], "email_click", email[clicked], none[clicked])

    kinds = [k for _, _, k, _, _ in parts]
    return {
        "cust": np.concatenate([p[0] for p in parts]),
        "t": np.concatenate([p[1] for p in parts]),
        "type": np.repeat(np.arange(len(parts)), [len(p[0]) for p in parts]),
        "type_names": np.array(kinds, dtype=object),
        "channel": np.concatenate([p[3] for p in parts]),
        "resolved": np.concatenate([p[4] for p in parts]),
    }


def _surveys(
    rng: np.random.Generator,
    cust: dict[str, np.ndarray],
    orders: dict[str, np.ndarray],
    inter: dict[str, np.ndarray],
    n_days: int,
) -> dict[str, np.ndarray]:
    """Survey waves answered by active panel members: noisy readings of the attitude."""
    n = len(cust["p"])
    until = orders["active_until"]
    owners, times = [], []
    for day in range(_SURVEY_FIRST_DAY, n_days - 14, _SURVEY_EVERY_DAYS):
        t = day + np.minimum(rng.exponential(4.0, n), 20.0)
        answer = (
            cust["panel"] & (cust["t0"] < day) & (t < until) & (rng.random(n) < _SURVEY_RESPONSE)
        )
        owners.append(np.flatnonzero(answer))
        times.append(t[answer])
    owner = np.concatenate(owners) if owners else np.zeros(0, np.int64)
    t = np.concatenate(times) if times else np.zeros(0)

    # first unresolved complaint per customer lowers every later answer
    names = list(inter["type_names"])
    is_unres = (inter["type"] == names.index("complaint")) & (inter["resolved"] == 0)
    first_unres = np.full(n, np.inf)
    np.minimum.at(first_unres, inter["cust"][is_unres], inter["t"][is_unres])

    x = (
        cust["attitude"][owner]
        + 0.45 * rng.standard_normal(len(owner))
        + _SURVEY_UNRESOLVED_SHIFT * (first_unres[owner] < t)
    )

    def likert(
        centre: float, scale: float, latent: np.ndarray, noise: float, hi: int
    ) -> np.ndarray:
        """A noisy reading of ``latent`` on a 1..hi scale (0..10 for NPS)."""
        lo = 0 if hi == 10 else 1
        raw = centre + scale * latent + noise * rng.standard_normal(len(latent))
        return np.clip(np.round(raw), lo, hi).astype(np.float64)

    trust = 0.8 * x + 0.6 * rng.standard_normal(len(owner))
    out = {
        "cust": owner,
        "t": t,
        "satisfaction": likert(3.7, 0.95, x, 0.35, 5),
        "nps": likert(7.2, 2.0, x, 0.8, 10),
        "repurchase_intention": likert(3.6, 0.9, x, 0.5, 5),
    }
    for i in (1, 2, 3):
        out[f"credibility_{i}"] = likert(5.0, 1.1, trust, 0.55, 7)
    benevolence = 0.8 * trust + 0.6 * rng.standard_normal(len(owner))
    for i in (1, 2, 3):
        out[f"benevolence_{i}"] = likert(4.6, 1.1, benevolence, 0.55, 7)
    out["switching_cost"] = likert(4.0, 1.2, cust["switching"][owner], 0.6, 7)
    out["attractiveness"] = likert(4.0, 1.2, cust["alternatives"][owner], 0.6, 7)
    return out


# ---------------------------------------------------------------------------------------------
# frames in canonical form, sorted by time
# ---------------------------------------------------------------------------------------------


def _time_order(seconds: np.ndarray) -> np.ndarray:
    """Stable permutation sorting events by time (ties keep the customer-grouped order)."""
    return np.argsort(seconds, kind="stable")


def _transactions_frame(
    lines: dict[str, np.ndarray], ids: np.ndarray, t_start: pd.Timestamp
) -> pd.DataFrame:
    """The transactions frame, sorted by time; empties ``lines`` as it goes (peak memory)."""
    # one id string per order (and per return line), then shared by reference across lines
    ret = lines.pop("is_return")
    n_orders = int(lines.pop("n_orders"))
    width = max(9, len(str(n_orders - 1)))
    order_id = _ids("O", np.arange(n_orders), width)[lines["order"]]
    order_id[ret] = _ids("R", lines.pop("order")[ret], width)
    seconds = _event_seconds(lines.pop("t"))
    order = _time_order(seconds)
    return _build_frame(
        "transactions",
        order,
        {
            "customer_id": lambda: ids[lines.pop("cust")[order]],
            "timestamp": lambda: _as_datetime(seconds[order], t_start),
            "amount": lambda: lines.pop("amount")[order],
            "order_id": lambda: order_id[order],
            "quantity": lambda: lines.pop("quantity")[order],
            "channel": lambda: _labels(_SALES_CHANNELS, lines.pop("channel")[order]),
            "category": lambda: _labels(_CATEGORIES, lines.pop("category")[order]),
            "margin": lambda: lines.pop("margin")[order],
        },
    )


def _labels(names: tuple[str, ...], codes: np.ndarray) -> np.ndarray:
    """Integer codes -> object array of the (shared) name strings."""
    return np.array(names, dtype=object)[codes]


def _build_frame(
    table: str, order: np.ndarray, columns: dict[str, Callable[[], np.ndarray]]
) -> pd.DataFrame:
    """A frame in canonical dtypes built one column at a time, so at most one extra column
    (not the whole table) is alive beside the frame while it is filled."""
    frame = pd.DataFrame(index=pd.RangeIndex(len(order)))
    for name, make in columns.items():
        frame[name] = make()
    return _canonical(frame, table)


def _customers_frame(
    cust: dict[str, np.ndarray], ids: np.ndarray, t_start: pd.Timestamp
) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "customer_id": ids,
            "signup_date": t_start + pd.to_timedelta(cust["signup"], unit="D"),
            "acquisition_channel": np.array(_CHANNELS, dtype=object)[cust["channel"]],
            "region": np.array(_REGIONS, dtype=object)[cust["region"]],
            "age_band": np.array(_AGE_BANDS, dtype=object)[cust["age"]],
        }
    )
    frame["signup_date"] = frame["signup_date"].astype("datetime64[ns]")
    return frame


def _surveys_frame(
    surveys: dict[str, np.ndarray], ids: np.ndarray, t_start: pd.Timestamp
) -> pd.DataFrame:
    """The surveys frame, sorted by time."""
    seconds = _event_seconds(surveys["t"])
    order = _time_order(seconds)
    columns: dict[str, Callable[[], np.ndarray]] = {
        "customer_id": lambda: ids[surveys["cust"][order]],
        "timestamp": lambda: _as_datetime(seconds[order], t_start),
    }

    def column(name: str) -> Callable[[], np.ndarray]:
        return lambda: surveys[name][order]

    for col in TABLES["surveys"].column_names[2:]:
        columns[col] = column(col)
    return _build_frame("surveys", order, columns)


def _interactions_frame(
    inter: dict[str, np.ndarray], ids: np.ndarray, t_start: pd.Timestamp
) -> pd.DataFrame:
    """The interactions frame, sorted by time; empties ``inter`` as it goes (peak memory)."""
    seconds = _event_seconds(inter.pop("t"))
    order = _separate_same_second(seconds, inter)
    resolved_labels = np.array([np.nan, False, True], dtype=object)
    return _build_frame(
        "interactions",
        order,
        {
            "customer_id": lambda: ids[inter.pop("cust")[order]],
            "timestamp": lambda: _as_datetime(seconds[order], t_start),
            "type": lambda: inter["type_names"][inter.pop("type")[order]],
            "channel": lambda: _labels(_CONTACT_CHANNELS, inter.pop("channel")[order]),
            "resolved": lambda: resolved_labels[inter.pop("resolved")[order] + 1],
        },
    )


def _separate_same_second(seconds: np.ndarray, inter: dict[str, np.ndarray]) -> np.ndarray:
    """Time order of the interactions, after moving an event by a second where the customer
    already has one of the same type and channel in that second (no duplicate rows).

    Each source part is grouped by customer, so under a stable sort such twins are adjacent.
    """
    _, kind = np.unique(inter["type_names"], return_inverse=True)
    kind = kind[inter["type"]]
    last_second = int(seconds.max(initial=0))
    while True:
        order = _time_order(seconds)
        s, c = seconds[order], inter["cust"][order]
        k, ch = kind[order], inter["channel"][order]
        twin = (s[1:] == s[:-1]) & (c[1:] == c[:-1]) & (k[1:] == k[:-1]) & (ch[1:] == ch[:-1])
        if not twin.any():
            return order
        later = order[1:][twin]
        seconds[later] += np.where(seconds[later] < last_second, 1, -1)  # stay in the period


def _canonical(frame: pd.DataFrame, table: str) -> pd.DataFrame:
    """Cast to the canonical dtypes of ``features.schema`` (no copy where already right)."""
    for col in TABLES[table].columns:
        if col.name not in frame:
            continue
        if col.dtype == "float" and frame[col.name].dtype != np.float64:
            frame[col.name] = frame[col.name].astype(np.float64)
        elif col.dtype == "datetime" and frame[col.name].dtype != "datetime64[ns]":
            frame[col.name] = frame[col.name].astype("datetime64[ns]")
    return frame
