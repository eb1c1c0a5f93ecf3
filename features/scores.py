"""RFM scores and segments: quintile R/F/M scores, named RFM segments, ABC, lifecycle, loyalty.

Every function here works on the per-customer RFM frame (index ``customer_id``, the columns of
:data:`features.schema.RFM_FEATURES`) and adds columns; nothing reads raw events, so the scores
are exactly as point-in-time as the RFM frame they come from.

Customers without purchases
---------------------------
A customer is a *purchaser* when ``recency_days`` is known (at least one purchase day in the
history). Customers known from the ``customers`` table only (prospects) get ``r_score``,
``f_score`` and ``m_score`` 0, ``rfm_segment`` and ``lifecycle_stage`` ``"prospect"``,
``abc_class`` ``"C"`` and ``loyalty_segment`` ``"stranger"`` (neither loyal nor profitable).

Quintile scores
---------------
Ranked among purchasers only: ``pct = rank(method="min", pct=True)``, ``score = ceil(5 * pct)``,
so ties share the lowest score of their block (the 60 % of one-time buyers with ``frequency`` 0
all get ``f_score`` 1) and a population of any size, even one customer, gets scores in 1..5.
Recency is reversed (5 = most recent). ``f_score`` ranks ``frequency`` (repeat purchase days);
``m_score`` ranks ``total_revenue`` (the customer's spend, the classic *M*: the lifetimes
``monetary_value`` is 0 for every one-time buyer and would not separate them).

Named RFM segments (R score x F score; M is not used, as in the widely used map)
---------------------------------------------------------------------------------
======  ===============  ==================  ==================  =========  =========
R \\ F   1                2                   3                   4          5
======  ===============  ==================  ==================  =========  =========
5       new              potential_loyalist  potential_loyalist  champions  champions
4       promising        potential_loyalist  potential_loyalist  loyal      loyal
3       about_to_sleep   about_to_sleep      need_attention      loyal      loyal
2       hibernating      hibernating         at_risk             at_risk    cant_lose
1       lost             hibernating         at_risk             at_risk    cant_lose
======  ===============  ==================  ==================  =========  =========

ABC (Pareto) classes
--------------------
On ``revenue_{abc.window_days}d``: purchasers sorted by that revenue, descending (ties by
``customer_id``), cumulative share of the total *positive* revenue. A customer is ``A`` while the
share *before* it is below ``a_revenue_share`` (so A is the smallest set of top customers that
reaches the share: the customer crossing the threshold belongs to A; with the strict
``cumulative <= share`` rule a customer making 80 % of revenue alone would not be A), ``B`` while
it is below ``b_revenue_share``, ``C`` otherwise; revenue <= 0 or missing is always ``C``.

Lifecycle stage (first matching rule wins, thresholds in ``cfg.lifecycle``)
---------------------------------------------------------------------------
1. ``prospect``: no purchase yet;
2. ``new``: ``T_days <= new_days`` (first purchase recent; wins over the rules below);
3. ``lost``: ``recency_days > lost_days``;
4. ``lapsed``: ``overdue_ratio > lapsed_overdue_ratio`` (much later than the usual gap);
5. ``declining``: ``trend_revenue_90d < declining_trend``;
6. ``active``: everything else (one-time buyers, whose ``overdue_ratio`` is NaN, fall through to
   the trend rule).

Loyalty x profitability (Reinartz & Kumar)
------------------------------------------
Among purchasers: loyal = ``frequency`` above its median, profitable = ``total_revenue`` above
its median (strictly). true_friend = loyal and profitable, barnacle = loyal only, butterfly =
profitable only, stranger = neither.

References
----------
Hughes, A. M. (1994). *Strategic Database Marketing*. Probus (RFM quintile scoring).
Reinartz, W. & Kumar, V. (2002). The mismanagement of customer loyalty. *Harvard Business
Review*, 80(7), 86-94.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from retentio.configs.settings import FeaturesConfig
from retentio.errors import ContractError

logger = logging.getLogger(__name__)

__all__ = [
    "ABC_CLASSES",
    "LIFECYCLE_STAGES",
    "PopulationStats",
    "LOYALTY_SEGMENTS",
    "RFM_SEGMENTS",
    "SEGMENT_GRID",
    "abc_classes",
    "build_score_features",
    "lifecycle_stages",
    "loyalty_segments",
    "population_stats",
    "quintile_scores",
    "rfm_segments",
]

PROSPECT = "prospect"

RFM_SEGMENTS: tuple[str, ...] = (
    "champions",
    "loyal",
    "potential_loyalist",
    "new",
    "promising",
    "need_attention",
    "about_to_sleep",
    "at_risk",
    "cant_lose",
    "hibernating",
    "lost",
    PROSPECT,
)
ABC_CLASSES: tuple[str, ...] = ("A", "B", "C")
LIFECYCLE_STAGES: tuple[str, ...] = (PROSPECT, "new", "active", "declining", "lapsed", "lost")
LOYALTY_SEGMENTS: tuple[str, ...] = ("true_friend", "butterfly", "barnacle", "stranger")

# SEGMENT_GRID[r - 1][f - 1]: the named segment of R score r and F score f (table in the docstring)
SEGMENT_GRID: tuple[tuple[str, ...], ...] = (
    ("lost", "hibernating", "at_risk", "at_risk", "cant_lose"),  # R = 1
    ("hibernating", "hibernating", "at_risk", "at_risk", "cant_lose"),  # R = 2
    ("about_to_sleep", "about_to_sleep", "need_attention", "loyal", "loyal"),  # R = 3
    ("promising", "potential_loyalist", "potential_loyalist", "loyal", "loyal"),  # R = 4
    ("new", "potential_loyalist", "potential_loyalist", "champions", "champions"),  # R = 5
)

_REQUIRED = (
    "recency_days",
    "T_days",
    "frequency",
    "total_revenue",
    "overdue_ratio",
    "trend_revenue_90d",
)


def _categorical(codes: np.ndarray, categories: tuple[str, ...], index: pd.Index) -> pd.Series:
    """A ``category`` Series from integer codes into ``categories`` (no string hashing)."""
    return pd.Series(
        pd.Categorical.from_codes(np.asarray(codes, dtype="int8"), categories=list(categories)),
        index=index,
    )


def quintile_scores(
    values: pd.Series,
    *,
    mask: pd.Series,
    reverse: bool = False,
    population: np.ndarray | None = None,
) -> pd.Series:
    """Quintile scores 1-5 of ``values`` among the rows where ``mask`` is True; 0 elsewhere.

    Parameters
    ----------
    values
        The quantity to score (e.g. ``frequency``).
    mask
        Rows that take part in the ranking (purchasers); the others score 0.
    reverse
        Score low values high (recency: 5 = most recent).
    population
        The sorted ranked values of the whole population (negated when ``reverse``, NaN
        excluded) when ``values`` holds only part of it (one partition); default: ``values``
        is the whole population.

    Returns
    -------
    pd.Series
        ``int64`` scores, ``ceil(5 * rank(method="min", pct=True))``; ties share the lowest score
        of their block. Missing values among ranked rows score 1.
    """
    ranked = values[mask]
    if reverse:
        ranked = -ranked
    if population is None:
        pct = ranked.rank(method="min", pct=True, na_option="top")  # NaN ranks lowest: score 1
        pct_values = pct.to_numpy(dtype=float)
    else:
        # rank(method="min") = 1 + the number of strictly smaller values in the population
        x = ranked.to_numpy(dtype=float)
        below = np.searchsorted(population, x, side="left").astype(float)
        pct_values = np.where(np.isnan(x), 1.0, below + 1.0) / max(len(population), 1)
    scores = np.ceil(5.0 * pct_values).clip(1, 5)
    out = pd.Series(0, index=values.index, dtype="int64")
    out[mask] = scores.astype("int64")
    return out


def rfm_segments(r_score: pd.Series, f_score: pd.Series) -> pd.Series:
    """Named RFM segment of each (R, F) score pair (see the module's table).

    Parameters
    ----------
    r_score, f_score
        Scores 1-5; 0 (no purchase) gives ``"prospect"``.

    Returns
    -------
    pd.Series
        ``category`` with the fixed categories :data:`RFM_SEGMENTS`.
    """
    grid = np.array(SEGMENT_GRID + ((PROSPECT,) * 5,), dtype=object)  # row 5 (index -1): R = 0
    r = r_score.to_numpy(dtype="int64")
    f = f_score.to_numpy(dtype="int64")
    prospect = (r == 0) | (f == 0)
    codes = np.vectorize(RFM_SEGMENTS.index, otypes=["int8"])(grid)
    return _categorical(
        codes[np.where(prospect, 5, r - 1), np.where(prospect, 0, f - 1)],
        RFM_SEGMENTS,
        r_score.index,
    )


def abc_classes(
    revenue: pd.Series,
    *,
    a_share: float,
    b_share: float,
    bounds: tuple[tuple[float, str] | None, tuple[float, str] | None] | None = None,
) -> pd.Series:
    """Pareto (ABC) class of each customer from its trailing revenue.

    Parameters
    ----------
    revenue
        Revenue per customer, index ``customer_id``; NaN or <= 0 is class C.
    a_share, b_share
        Cumulative revenue shares closing classes A and B (``0 < a_share < b_share < 1``).
    bounds
        The (revenue, customer_id) key of the last A and the last B customer of the whole
        population (:func:`population_stats`; ``None`` when a class is empty), when
        ``revenue`` holds only part of it; default: ``revenue`` is the whole population.

    Returns
    -------
    pd.Series
        ``category`` A/B/C aligned on ``revenue.index``. A customer is A while the cumulative
        share of the customers ranked above it is below ``a_share``, B below ``b_share``.
    """
    rev = revenue.astype("float64").where(revenue > 0, 0.0).fillna(0.0)
    codes = np.full(len(rev), 2, dtype="int8")  # C
    if bounds is not None:
        values = rev.to_numpy()
        ids = np.asarray(revenue.index.to_numpy(), dtype=object)
        for code, bound in ((1, bounds[1]), (0, bounds[0])):  # B first, A overwrites
            if bound is None:
                continue
            value, last_id = bound
            inside = (values > value) | ((values == value) & (ids <= last_id))
            codes[inside & (values > 0)] = code
        return _categorical(codes, ABC_CLASSES, revenue.index)
    total = float(rev.sum())
    if total > 0:
        values = rev.to_numpy()
        ids = rev.index
        base = (
            np.arange(len(values))
            if ids.is_monotonic_increasing
            else np.argsort(ids.to_numpy(), kind="stable")
        )
        order = base[np.argsort(-values[base], kind="stable")]  # revenue desc, then id asc
        ranked = values[order]
        share_before = (np.cumsum(ranked) - ranked) / total
        positive = ranked > 0
        codes[order] = np.where(
            positive & (share_before < a_share),
            0,
            np.where(positive & (share_before < b_share), 1, 2),
        )
    return _categorical(codes, ABC_CLASSES, revenue.index)


def lifecycle_stages(rfm: pd.DataFrame, cfg: FeaturesConfig) -> pd.Series:
    """Lifecycle stage of each customer (rules and precedence in the module docstring).

    Parameters
    ----------
    rfm
        Per-customer frame with ``recency_days``, ``T_days``, ``overdue_ratio`` and
        ``trend_revenue_90d``.
    cfg
        ``cfg.lifecycle`` holds the thresholds.

    Returns
    -------
    pd.Series
        ``category`` with the fixed categories :data:`LIFECYCLE_STAGES`.
    """
    lc = cfg.lifecycle
    recency = rfm["recency_days"].to_numpy(dtype=float)
    age = rfm["T_days"].to_numpy(dtype=float)
    overdue = rfm["overdue_ratio"].to_numpy(dtype=float)
    trend = rfm["trend_revenue_90d"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore"):
        conditions = [
            np.isnan(recency),
            age <= lc.new_days,
            recency > lc.lost_days,
            overdue > lc.lapsed_overdue_ratio,
            trend < lc.declining_trend,
        ]
    stages = [PROSPECT, "new", "lost", "lapsed", "declining"]
    codes = np.select(
        conditions, [LIFECYCLE_STAGES.index(s) for s in stages], LIFECYCLE_STAGES.index("active")
    )
    return _categorical(codes, LIFECYCLE_STAGES, rfm.index)


def loyalty_segments(
    frequency: pd.Series,
    revenue: pd.Series,
    *,
    mask: pd.Series,
    medians: tuple[float, float] | None = None,
) -> pd.Series:
    """Loyalty x profitability quadrant (Reinartz & Kumar) among purchasers.

    Parameters
    ----------
    frequency
        Repeat purchases; loyal = strictly above the purchasers' median.
    revenue
        Total revenue; profitable = strictly above the purchasers' median.
    mask
        Purchasers; the others are ``"stranger"``.
    medians
        The purchasers' (frequency, revenue) medians of the whole population, when the series
        hold only part of it; default: computed from the series.

    Returns
    -------
    pd.Series
        ``category`` with the fixed categories :data:`LOYALTY_SEGMENTS`.
    """
    freq = frequency.astype("float64")
    rev = revenue.astype("float64")
    if medians is not None:
        loyal = (freq > medians[0]) & mask
        profitable = (rev > medians[1]) & mask
    elif mask.any():
        loyal = (freq > freq[mask].median()) & mask
        profitable = (rev > rev[mask].median()) & mask
    else:
        loyal = profitable = pd.Series(False, index=frequency.index)
    loyal, profitable = loyal.to_numpy(dtype=bool), profitable.to_numpy(dtype=bool)
    codes = np.select(
        [loyal & profitable, loyal, profitable],
        [LOYALTY_SEGMENTS.index(s) for s in ("true_friend", "barnacle", "butterfly")],
        LOYALTY_SEGMENTS.index("stranger"),
    )
    return _categorical(codes, LOYALTY_SEGMENTS, frequency.index)


@dataclass(frozen=True)
class PopulationStats:
    """What the scores need of the whole population, for frames holding only part of it.

    Computed once by :func:`population_stats` over every partition's purchasers and broadcast,
    so that a partition's scores equal those of the whole population scored at once.

    Attributes
    ----------
    recency, frequency, revenue
        Sorted ranked values of the purchasers (recency negated: 5 = most recent).
    abc_bounds
        (revenue, customer_id) of the last A and last B customer (``None``: empty class).
    medians
        Purchasers' median frequency and total revenue (loyalty segments).
    """

    recency: np.ndarray
    frequency: np.ndarray
    revenue: np.ndarray
    abc_bounds: tuple[tuple[float, str] | None, tuple[float, str] | None]
    medians: tuple[float, float]


def population_stats(parts: list[pd.DataFrame], cfg: FeaturesConfig) -> PopulationStats:
    """:class:`PopulationStats` from the purchasers' columns of every partition.

    Parameters
    ----------
    parts
        One frame per partition, index ``customer_id``, with ``recency_days``, ``frequency``,
        ``total_revenue`` and ``revenue_{cfg.abc.window_days}d`` of its purchasers (rows with
        a known ``recency_days``; other rows are ignored).
    cfg
        Feature settings (``abc`` shares and window).

    Returns
    -------
    PopulationStats
    """
    abc_col = f"revenue_{cfg.abc.window_days}d"
    frames = [p[p["recency_days"].notna()] for p in parts]
    recency = np.concatenate([-f["recency_days"].to_numpy(dtype=float) for f in frames])
    frequency = np.concatenate([f["frequency"].to_numpy(dtype=float) for f in frames])
    revenue = np.concatenate([f["total_revenue"].to_numpy(dtype=float) for f in frames])
    abc = np.concatenate([f[abc_col].to_numpy(dtype=float) for f in frames])
    ids = np.concatenate([np.asarray(f.index.to_numpy(), dtype=object) for f in frames])
    abc = np.where(abc > 0, abc, 0.0)
    abc = np.where(np.isnan(abc), 0.0, abc)
    order = np.argsort(-abc, kind="stable")
    ranked = abc[order]
    total = float(ranked.sum())
    bounds: list[tuple[float, str] | None] = [None, None]
    if total > 0:
        share_before = (np.cumsum(ranked) - ranked) / total
        for i, share in enumerate((cfg.abc.a_revenue_share, cfg.abc.b_revenue_share)):
            k = int(np.count_nonzero((ranked > 0) & (share_before < share)))
            if k == 0:
                continue
            value = float(ranked[k - 1])
            n_inside = k - int(np.count_nonzero(ranked > value))  # of the customers tied at value
            tied = np.sort(ids[abc == value])  # ties go by customer_id, ascending
            bounds[i] = (value, tied[n_inside - 1])
    medians = (
        (float(np.median(frequency)), float(np.median(revenue)))
        if len(frequency)
        else (np.nan, np.nan)
    )
    return PopulationStats(
        recency=np.sort(recency[~np.isnan(recency)]),
        frequency=np.sort(frequency[~np.isnan(frequency)]),
        revenue=np.sort(revenue[~np.isnan(revenue)]),
        abc_bounds=(bounds[0], bounds[1]),
        medians=medians,
    )


def build_score_features(
    rfm: pd.DataFrame, cfg: FeaturesConfig, stats: PopulationStats | None = None
) -> pd.DataFrame:
    """Add R/F/M quintile scores, the RFM segment, ABC class, lifecycle and loyalty segments.

    Parameters
    ----------
    rfm
        Per-customer RFM frame (index ``customer_id``) with at least ``recency_days``,
        ``T_days``, ``frequency``, ``total_revenue``, ``overdue_ratio``,
        ``trend_revenue_90d`` and ``revenue_{cfg.abc.window_days}d``. Rows with NaN
        ``recency_days`` are customers without purchases.
    cfg
        Feature settings (``abc`` and ``lifecycle`` sections).
    stats
        The whole population's statistics when ``rfm`` is one partition of it
        (:func:`population_stats`); default: ``rfm`` is the whole population.

    Returns
    -------
    pd.DataFrame
        A copy of ``rfm`` with ``r_score``, ``f_score``, ``m_score`` (int 0-5),
        ``rfm_segment``, ``abc_class``, ``lifecycle_stage`` and ``loyalty_segment``
        (``category`` with fixed categories) added.

    Raises
    ------
    ContractError
        A column the scores need is missing from ``rfm`` (the message names them).
    """
    abc_col = f"revenue_{cfg.abc.window_days}d"
    missing = [c for c in (*_REQUIRED, abc_col) if c not in rfm.columns]
    if missing:
        raise ContractError(
            f"RFM frame lacks {missing} needed for scores and segments; build it with "
            f"features.rfm.build_rfm_features (and include {cfg.abc.window_days} in "
            "features.windows_days for the ABC window)"
        )
    out = rfm.copy(deep=False)  # new columns go to the copy only
    buyers = out["recency_days"].notna()
    s = stats
    out["r_score"] = quintile_scores(
        out["recency_days"], mask=buyers, reverse=True, population=None if s is None else s.recency
    )
    out["f_score"] = quintile_scores(
        out["frequency"], mask=buyers, population=None if s is None else s.frequency
    )
    out["m_score"] = quintile_scores(
        out["total_revenue"], mask=buyers, population=None if s is None else s.revenue
    )
    out["rfm_segment"] = rfm_segments(out["r_score"], out["f_score"])
    out["abc_class"] = abc_classes(
        out[abc_col].where(buyers),
        a_share=cfg.abc.a_revenue_share,
        b_share=cfg.abc.b_revenue_share,
        bounds=None if s is None else s.abc_bounds,
    )
    out["lifecycle_stage"] = lifecycle_stages(out, cfg)
    out["loyalty_segment"] = loyalty_segments(
        out["frequency"],
        out["total_revenue"],
        mask=buyers,
        medians=None if s is None else s.medians,
    )
    logger.debug("scored %d customers (%d purchasers)", len(out), int(buyers.sum()))
    return out
