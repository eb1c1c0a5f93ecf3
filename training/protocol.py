"""The protocol ladder: how each task is trained and evaluated on the history at hand.

A task (churn, next purchase, LTV) with a label horizon of ``H`` days gets the strongest
protocol the history allows (``training.protocol: auto``), or the one the config forces:

``time_split``
    Rolling snapshots with the embargo (:func:`training.snapshots.snapshot_cutoffs`): models
    train on older snapshots and are evaluated on the latest labelled one. Needs
    ``MIN_HISTORY_DAYS + (n_snapshots - 2) * step_days + gap + H`` days (880 for the default
    365-day LTV).
``customer_split``
    At least one snapshot can be labelled (``MIN_HISTORY_DAYS + H`` days), but no time split.
    Up to ``n_snapshots`` labelled cutoffs ``step_days`` apart are stacked and split into
    ``training.n_folds`` folds *grouped by customer* (a customer's rows are all in one fold);
    each fold is predicted by candidates fitted on the other folds, and those out-of-fold
    predictions give the metrics and the bootstrap intervals. Drift over time is not measured:
    every fold covers the same period.
``btyd_only``
    No snapshot can be labelled for ``H``. BG/NBD + Gamma-Gamma fitted on the whole history
    needs no label and answers every output (P(no purchase within H), the next-purchase
    distribution, LTV). Nothing is evaluated.

LTV is special: when ``labels.ltv_horizon_days`` cannot be labelled but a horizon of at least
``training.min_ltv_label_days`` can, a shorter horizon is learned and the served model extends
it to the asked horizon (see :class:`training.pipeline` and ``ExtendedLtvModel``); the plan
records both horizons. Under ``auto`` the learned horizon is the longest that allows a time
split, when that is at least ``min_ltv_label_days``: its snapshots are newer, so their customers
are as old as the ones scored (on one year of a closed cohort, a 274-day LTV learned on the one
labelled snapshot, 90 days after the first purchase, over-predicted the next 365 days by 106 %,
a 107-day LTV learned out of time by 46 %; BENCHMARKS.md). Otherwise the longest labelable
horizon is learned under ``customer_split``.

Below ``training.min_repeat_customers`` customers with a repeat purchase BG/NBD cannot be fitted
and training refuses (:func:`check_btyd_fittable`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from retentio.configs.settings import Settings
from retentio.errors import InsufficientDataError
from retentio.features.cutoff import as_cutoff
from retentio.training.snapshots import MIN_HISTORY_DAYS, snapshot_cutoffs

__all__ = [
    "LIKE_FOR_LIKE_TAGS",
    "PROTOCOLS",
    "TaskPlan",
    "check_btyd_fittable",
    "customer_folds",
    "customer_split_cutoffs",
    "gate_mismatch",
    "labelable_days",
    "plan_task",
    "repeat_customers",
    "require_repeat_customers",
    "task_horizons",
]

PROTOCOLS: tuple[str, ...] = ("time_split", "customer_split", "btyd_only")


@dataclass(frozen=True)
class TaskPlan:
    """How one task is trained and evaluated.

    Attributes
    ----------
    task
        ``churn``, ``next-purchase`` or ``ltv``.
    protocol
        One of :data:`PROTOCOLS`.
    horizon_days
        The horizon the served model answers for (the configured one).
    learned_horizon_days
        The label horizon learned and evaluated (shorter than ``horizon_days`` only for an
        extended LTV); ``None`` under ``btyd_only``.
    cutoffs
        Snapshot cutoffs, oldest first (time_split: the last one is the evaluation snapshot;
        customer_split: every one is labelled and split by customer); empty for ``btyd_only``.
    history_days
        Days of history (first to last event day, both included).
    needed_days
        Days of history one labelled snapshot at ``horizon_days`` needs.
    reason
        Why this protocol (one sentence, shown in the CLI, MLflow and the report).
    """

    task: str
    protocol: str
    horizon_days: int
    learned_horizon_days: int | None
    cutoffs: tuple[pd.Timestamp, ...] = field(default=())
    history_days: int = 0
    needed_days: int = 0
    reason: str = ""

    @property
    def extended(self) -> bool:
        """True when the served horizon is longer than the learned one (LTV extension)."""
        return self.learned_horizon_days is not None and self.learned_horizon_days < (
            self.horizon_days
        )

    @property
    def evaluated(self) -> bool:
        """False under ``btyd_only`` (no labelled snapshot)."""
        return self.protocol != "btyd_only"

    def describe(self) -> str:
        """One line for the CLI: protocol, horizons and why."""
        text = f"{self.task}: {self.protocol}"
        if self.extended:
            text += (
                f" (learned {self.learned_horizon_days}-day LTV, extended to "
                f"{self.horizon_days} days by BG/NBD x Gamma-Gamma)"
            )
        return f"{text} - {self.reason}"

    def as_tags(self) -> dict[str, str]:
        """Facts stored on the run and the registered version (``protocol``, horizons)."""
        tags = {"protocol": self.protocol, "horizon_days": str(self.horizon_days)}
        if self.learned_horizon_days is not None:
            tags["learned_horizon_days"] = str(self.learned_horizon_days)
        return tags


def task_horizons(settings: Settings) -> dict[str, int]:
    """The configured label horizon of each task."""
    lab = settings.labels
    return {
        "churn": lab.churn_horizon_days,
        "next-purchase": lab.next_purchase_horizon_days,
        "ltv": lab.ltv_horizon_days,
    }


def _span(first: pd.Timestamp, last: pd.Timestamp) -> int:
    return int((as_cutoff(last) - as_cutoff(first)).days) + 1


def labelable_days(first: pd.Timestamp, last: pd.Timestamp) -> int:
    """The longest horizon one snapshot can be labelled for (with its minimum of history)."""
    return int((as_cutoff(last) - as_cutoff(first)).days) - MIN_HISTORY_DAYS


def customer_split_cutoffs(
    first: pd.Timestamp,
    last: pd.Timestamp,
    *,
    horizon_days: int,
    step_days: int,
    n_snapshots: int,
) -> list[pd.Timestamp]:
    """Labelled cutoffs for the customer split, oldest first (empty if none can be labelled).

    The newest is the latest cutoff whose ``horizon_days`` window lies inside the data; the
    others step back ``step_days`` at a time while ``MIN_HISTORY_DAYS`` of history remain
    before them, at most ``n_snapshots`` in all.
    """
    first, end = as_cutoff(first), as_cutoff(last)
    latest = end - pd.Timedelta(days=horizon_days)
    out = []
    for i in range(n_snapshots):
        cutoff = latest - pd.Timedelta(days=step_days * i)
        if (cutoff - first).days < MIN_HISTORY_DAYS:
            break
        out.append(cutoff)
    return out[::-1]


def _longest_time_split(
    first: pd.Timestamp, last: pd.Timestamp, settings: Settings, *, upper: int
) -> int | None:
    """The longest horizon (at most ``upper`` days) the history allows a time split for."""
    tr = settings.training
    span = int((as_cutoff(last) - as_cutoff(first)).days)
    room = span - MIN_HISTORY_DAYS - (tr.n_snapshots - 2) * tr.step_days
    guess = min(upper, room // 2 if tr.embargo else room - tr.step_days)
    for h in range(guess + 1, 0, -1):  # the guess is exact up to a day of rounding
        try:
            snapshot_cutoffs(
                last,
                horizon_days=h,
                step_days=tr.step_days,
                n_snapshots=tr.n_snapshots,
                first_timestamp=first,
                embargo=tr.embargo,
            )
        except InsufficientDataError:
            if h < guess - 2 * tr.step_days:  # far below the estimate: none fits
                return None
            continue
        return min(h, upper)
    return None


def _needed(horizon: int) -> int:
    return MIN_HISTORY_DAYS + horizon + 1


def plan_task(
    task: str,
    *,
    first: pd.Timestamp,
    last: pd.Timestamp,
    settings: Settings,
    protocol: str | None = None,
) -> TaskPlan:
    """The strongest protocol the history allows for ``task`` (or the forced one).

    Parameters
    ----------
    task
        ``churn``, ``next-purchase`` or ``ltv``.
    first, last
        The first and last event times of the history.
    settings
        Horizons (``labels``), ``training.protocol``, snapshots and ``min_ltv_label_days``.
    protocol
        Overrides ``training.protocol`` (``auto`` or one of :data:`PROTOCOLS`).

    Returns
    -------
    TaskPlan
        The protocol, the horizons, the cutoffs and the reason.

    Raises
    ------
    InsufficientDataError
        A forced ``time_split`` or ``customer_split`` the history cannot support (the message
        gives the days found, the days needed and what to change).
    """
    tr = settings.training
    wanted = protocol or tr.protocol
    horizon = task_horizons(settings)[task]
    span = _span(first, last)
    needed = _needed(horizon)

    def time_split(h: int) -> list[pd.Timestamp] | None:
        try:
            return snapshot_cutoffs(
                last,
                horizon_days=h,
                step_days=tr.step_days,
                n_snapshots=tr.n_snapshots,
                first_timestamp=first,
                embargo=tr.embargo,
            )
        except InsufficientDataError:
            if wanted == "time_split":
                raise
            return None

    def customer_split(h: int) -> list[pd.Timestamp]:
        return customer_split_cutoffs(
            first, last, horizon_days=h, step_days=tr.step_days, n_snapshots=tr.n_snapshots
        )

    learned = horizon
    if task == "ltv" and wanted in ("auto", "customer_split"):
        longest = labelable_days(first, last)
        shortest = min(tr.min_ltv_label_days, horizon)
        if longest < horizon and longest >= shortest:
            learned = longest
            timed = _longest_time_split(first, last, settings, upper=longest)
            if wanted == "auto" and timed is not None and timed >= shortest:
                learned = timed  # a shorter horizon, out of time, on older snapshots

    if wanted in ("auto", "time_split"):
        cutoffs = time_split(learned)
        if cutoffs is not None:
            return TaskPlan(
                task,
                "time_split",
                horizon,
                learned,
                tuple(cutoffs),
                span,
                needed,
                f"{span} days of history allow rolling snapshots with a {learned}-day embargo",
            )
    if wanted in ("auto", "customer_split"):
        cutoffs = customer_split(learned)
        if cutoffs:
            why = (
                f"{span} days of history label {len(cutoffs)} snapshot(s) for {learned} days "
                "but not a time split; evaluated out of fold by customer (drift over time not "
                "measured)"
            )
            if learned < horizon:
                why += f"; {horizon} days need {needed} days of history for a labelled snapshot"
            return TaskPlan(
                task, "customer_split", horizon, learned, tuple(cutoffs), span, needed, why
            )
        if wanted == "customer_split":
            raise InsufficientDataError(
                f"{task}: customer_split needs a labelled snapshot: {needed} days of history "
                f"for a {horizon}-day horizon ({MIN_HISTORY_DAYS} before the cutoff), the data "
                f"span {span}; shorten the horizon (--horizon / --ltv-horizon), provide a "
                "longer history, or set training.protocol: auto"
            )
    return TaskPlan(
        task,
        "btyd_only",
        horizon,
        None,
        (),
        span,
        needed,
        f"not evaluated: {span} days of history, {needed} needed for a labelled snapshot",
    )


def customer_folds(customer_ids: pd.Series | np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Fold number (0..n_folds-1) of every row, grouped by customer.

    All rows of one customer (e.g. the same customer at several snapshots) get the same fold;
    customers are shuffled with ``seed`` and dealt round robin, so fold sizes differ by at
    most one customer.

    Returns
    -------
    numpy.ndarray
        Integer fold per row, aligned with ``customer_ids``.
    """
    codes, uniques = pd.factorize(pd.Series(np.asarray(customer_ids)), sort=True)
    order = np.random.default_rng(seed).permutation(len(uniques))
    fold_of = np.empty(len(uniques), dtype=np.int64)
    fold_of[order] = np.arange(len(uniques)) % n_folds
    return fold_of[codes]


def check_btyd_fittable(transactions: pd.DataFrame, settings: Settings) -> int:
    """Customers with a repeat purchase day; refuse below ``training.min_repeat_customers``.

    Parameters
    ----------
    transactions
        The history (``customer_id``, ``timestamp``, ``amount``).
    settings
        ``training.min_repeat_customers``.

    Returns
    -------
    int
        The number of customers with purchases on at least two distinct days.

    Raises
    ------
    InsufficientDataError
        Fewer than the minimum: even BG/NBD has nothing to learn from.
    """
    return require_repeat_customers(repeat_customers(transactions), settings)


def repeat_customers(transactions: pd.DataFrame) -> int:
    """The number of customers with purchases (``amount > 0``) on at least two distinct days.

    A sum over any split of the customers (e.g. the Dask engine's partitions) gives the total.
    """
    buys = transactions.loc[transactions["amount"] > 0, ["customer_id", "timestamp"]]
    days = buys.assign(day=buys["timestamp"].dt.normalize()).drop_duplicates(["customer_id", "day"])
    return int((days["customer_id"].value_counts() >= 2).sum())


def require_repeat_customers(repeat: int, settings: Settings) -> int:
    """``repeat`` customers with a repeat purchase day, or :class:`InsufficientDataError` below
    ``training.min_repeat_customers``."""
    need = settings.training.min_repeat_customers
    if repeat < need:
        raise InsufficientDataError(
            f"{repeat} customers made a repeat purchase (on two distinct days), at least "
            f"training.min_repeat_customers={need} are needed to fit BG/NBD, the weakest "
            "protocol; provide a longer history or more customers"
        )
    return repeat


#: Version tags that must be equal for the promotion gate to compare two versions.
LIKE_FOR_LIKE_TAGS: tuple[str, ...] = ("protocol", "horizon_days", "learned_horizon_days")


def gate_mismatch(candidate: dict[str, str], champion: dict[str, str]) -> str | None:
    """Why a candidate cannot be compared with the champion, or None when it can.

    Two versions are compared only under the same protocol and the same horizons (served and
    learned): a 60-day AUC says nothing about a 90-day one, and out-of-fold metrics are not
    out-of-time ones. A version without a ``protocol`` tag predates the ladder and was trained
    with the time split; a horizon tag on one version only is a mismatch (it cannot be
    checked), on neither (both predate the ladder) it is not.

    Parameters
    ----------
    candidate, champion
        Version tags (``protocol``, ``horizon_days``, ``learned_horizon_days``).

    Returns
    -------
    str or None
        The first difference, phrased for the gate's decision, or None.
    """
    for key in LIKE_FOR_LIKE_TAGS:
        default = "time_split" if key == "protocol" else None
        if key != "protocol" and key not in candidate and key not in champion:
            continue  # neither version records it (both predate the ladder)
        a, b = candidate.get(key, default), champion.get(key, default)
        if a is None or b is None or a != b:
            what = key.replace("_", " ")
            return (
                f"{what} differs: candidate {a or 'unknown'}, champion {b or 'unknown'}; "
                "only like is compared with like (retrain with the champion's settings, or "
                "--force)"
            )
    return None
