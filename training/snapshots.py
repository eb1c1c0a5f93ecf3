"""Rolling snapshots: cutoffs whose label windows are fully observed, and (features, labels) frames.

A snapshot at cutoff ``t`` is the feature frame at ``t`` (built from the history, every event with
``timestamp < t + 1 day``) joined with the labels of ``t`` (events in the ``H`` whole days after the
cutoff day). Cutoffs are spaced ``step_days`` apart, going back from the latest cutoff whose
longest label window ends inside the data; with the embargo (default) the one before the newest
lies a whole horizon before it. Training stacks the older snapshots; the newest one
is the evaluation snapshot (see :mod:`training.pipeline`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

import pandas as pd

from retentio.configs.settings import Settings
from retentio.errors import InsufficientDataError
from retentio.features.cutoff import as_cutoff, history
from retentio.features.labels import is_active
from retentio.features.schema import AS_OF, ENTITY, Tables

logger = logging.getLogger(__name__)

#: Days of history the oldest cutoff needs at least (features like 90-day trends need it).
MIN_HISTORY_DAYS = 90
#: Label columns joined onto every snapshot (see ``features.schema.LABELS``).
LABEL_COLUMNS = (
    "is_active",
    "churned",
    "days_to_next_purchase",
    "next_purchase_observed",
    "future_revenue",
    "future_orders",
)

__all__ = [
    "LABEL_COLUMNS",
    "MIN_HISTORY_DAYS",
    "build_snapshot",
    "build_snapshots",
    "check_snapshot",
    "history_tables",
    "snapshot_cutoffs",
    "task_horizon_days",
]


def _max_label_cutoff(last_timestamp: pd.Timestamp, horizon_days: int) -> pd.Timestamp:
    """Latest cutoff whose ``horizon_days`` label window lies inside the data."""
    try:
        from retentio.features.labels import max_label_cutoff
    except ImportError:  # pragma: no cover - the labels module is part of the features layer
        return as_cutoff(last_timestamp) - pd.Timedelta(days=horizon_days)
    return as_cutoff(max_label_cutoff(last_timestamp, horizon_days))


def snapshot_cutoffs(
    last_timestamp: pd.Timestamp,
    *,
    horizon_days: int,
    step_days: int,
    n_snapshots: int,
    first_timestamp: pd.Timestamp | None = None,
    min_history_days: int = MIN_HISTORY_DAYS,
    embargo: bool = True,
) -> list[pd.Timestamp]:
    """Rolling cutoffs: the latest fully labelled one (evaluation), then every ``step_days`` back.

    With ``embargo`` (the default) the newest cutoff before the evaluation one lies a whole
    horizon earlier, so no training or calibration label window overlaps the evaluation
    window: with 30-day steps and a 90-day horizon, overlapping windows let the trees learn
    what the same customers do during the evaluation period, and flatter the holdout metrics.

    Parameters
    ----------
    last_timestamp
        The last event time in the data (the data are complete up to the end of that day).
    horizon_days
        The longest label window the snapshots need (e.g. the LTV horizon).
    step_days
        Days between consecutive cutoffs.
    n_snapshots
        How many cutoffs.
    first_timestamp
        The first event time; when given, the oldest cutoff must have at least
        ``min_history_days`` of history before it.
    min_history_days
        Minimum days between the first event and the oldest cutoff.
    embargo
        Keep a gap of ``max(horizon_days, step_days)`` between the evaluation cutoff and the
        cutoff before it (otherwise ``step_days``).

    Returns
    -------
    list of pandas.Timestamp
        ``n_snapshots`` midnight cutoffs, oldest first; the last is the evaluation snapshot.

    Raises
    ------
    InsufficientDataError
        The data do not span ``min_history_days + (n_snapshots - 2) * step_days + gap +
        horizon_days`` days (``gap`` as above); the message gives that minimum, the span found
        and what to reduce.
    """
    if n_snapshots < 1 or step_days < 1 or horizon_days < 1:
        raise InsufficientDataError(
            f"snapshot_cutoffs needs n_snapshots, step_days and horizon_days >= 1 "
            f"(got {n_snapshots}, {step_days}, {horizon_days}); fix training.* / labels.* in config"
        )
    latest = _max_label_cutoff(pd.Timestamp(last_timestamp), horizon_days)
    gap = max(horizon_days, step_days) if embargo else step_days
    earlier = [latest - pd.Timedelta(days=gap + step_days * i) for i in range(n_snapshots - 1)]
    cutoffs = [*earlier[::-1], latest]
    if first_timestamp is not None:
        first = as_cutoff(first_timestamp)
        have = (cutoffs[0] - first).days
        if have < min_history_days:
            need = min_history_days + (n_snapshots - 2) * step_days + gap + horizon_days
            if n_snapshots == 1:
                need = min_history_days + horizon_days
            span = (as_cutoff(last_timestamp) - first).days + 1
            raise InsufficientDataError(
                f"not enough history for {n_snapshots} snapshots every {step_days} days with a "
                f"{horizon_days}-day label horizon: the data span {span} days "
                f"({first.date()} to {as_cutoff(last_timestamp).date()}) but at least {need} days "
                f"are needed ({min_history_days} days of history before the oldest cutoff "
                f"{cutoffs[0].date()}, which has only {max(have, 0)}); reduce "
                f"training.n_snapshots / training.step_days or the horizon "
                f"(--horizon / --ltv-horizon), or provide a longer history"
            )
    return cutoffs


def task_horizon_days(settings: Settings, tasks: Iterable[str]) -> int:
    """The longest label horizon the given tasks need (churn, next-purchase, ltv)."""
    lab = settings.labels
    by_task = {
        "churn": lab.churn_horizon_days,
        "next-purchase": lab.next_purchase_horizon_days,
        "ltv": lab.ltv_horizon_days,
    }
    return max(by_task[t] for t in tasks)


def history_tables(tables: Tables, cutoff: pd.Timestamp) -> Tables:
    """The tables restricted to the history visible at ``cutoff`` (timestamp < cutoff + 1 day).

    The customers table has no event time and is passed whole; the feature builder decides from
    ``signup_date`` which customers are known at the cutoff.
    """
    cutoff = as_cutoff(cutoff)
    customers = tables.customers
    return Tables(
        transactions=history(tables.transactions, cutoff),
        customers=customers,
        surveys=None if tables.surveys is None else history(tables.surveys, cutoff),
        interactions=None if tables.interactions is None else history(tables.interactions, cutoff),
        name=tables.name,
    )


def build_snapshot(
    tables: Tables,
    cutoff: pd.Timestamp,
    settings: Settings,
    *,
    features: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Features at ``cutoff`` joined with the labels of ``cutoff``.

    Only the history before the cutoff (see :func:`history_tables`) reaches the feature builder;
    the labels come from the label windows after it.

    Parameters
    ----------
    tables
        The input tables (any extent; future rows are cut off here).
    cutoff
        The snapshot date.
    settings
        Full settings (features and labels sections are used).
    features
        The feature frame at ``cutoff`` when already built (e.g. shared by tasks whose label
        horizons differ); default: built here.

    Returns
    -------
    pandas.DataFrame
        One row per customer known at the cutoff: ``customer_id``, ``as_of``, the features and
        :data:`LABEL_COLUMNS`. Labels of customers absent from the label frame are filled as
        "no purchase" (days censored at the horizon, revenue and orders 0).
    """
    from retentio.features.build import build_features
    from retentio.features.labels import build_labels

    cutoff = as_cutoff(cutoff)
    if features is None:
        features = build_features(history_tables(tables, cutoff), cutoff, settings.features)
    labels = build_labels(tables.transactions, cutoff, settings.labels)
    labels = labels.reindex(columns=list(LABEL_COLUMNS))
    if ENTITY in labels.columns:  # pragma: no cover - defensive: contract says index
        labels = labels.set_index(ENTITY)
    frame = features.join(labels, on=ENTITY)
    frame[AS_OF] = cutoff
    _fill_missing_labels(frame, settings)
    return frame.reset_index(drop=True)


def _fill_missing_labels(frame: pd.DataFrame, settings: Settings) -> None:
    """Customers the label builder did not list bought nothing after the cutoff."""
    lab = settings.labels
    recency = frame.get("recency_days")
    active = (
        is_active(recency, lab.active_days)
        if recency is not None
        else pd.Series(False, index=frame.index)
    )
    # object columns (all-NaN after the join): make them float first, so fillna does not rely on
    # pandas' deprecated silent downcasting of object arrays
    listed = frame["is_active"].astype("boolean").astype(float)
    frame["is_active"] = listed.fillna(active.astype(float)).astype(bool)
    missing_churn = frame["churned"].isna() & frame["is_active"]
    frame.loc[missing_churn, "churned"] = 1.0
    frame.loc[~frame["is_active"], "churned"] = float("nan")
    frame["churned"] = frame["churned"].astype(float)
    observed = frame["next_purchase_observed"].astype("boolean")
    frame["next_purchase_observed"] = observed.fillna(False).astype(bool)
    frame["days_to_next_purchase"] = (
        frame["days_to_next_purchase"].fillna(lab.next_purchase_horizon_days).astype(float)
    )
    frame["future_revenue"] = frame["future_revenue"].fillna(0.0).astype(float)
    frame["future_orders"] = frame["future_orders"].fillna(0).astype(float)


def check_snapshot(frame: pd.DataFrame, settings: Settings, *, tasks: Sequence[str]) -> None:
    """Refuse a snapshot with too few customers, purchasers or active customers.

    Parameters
    ----------
    frame
        One snapshot from :func:`build_snapshot`.
    settings
        ``training.min_customers`` and ``training.min_purchasers`` are the minimums.
    tasks
        The tasks to train; the active-customer and churner checks apply to churn only.

    Raises
    ------
    InsufficientDataError
        Naming the snapshot date, what was counted, the count and the minimum.
    """
    tr = settings.training
    as_of = pd.Timestamp(frame[AS_OF].iloc[0]).date() if len(frame) else "?"
    fix = "use more data, an earlier --cutoff or lower training.min_customers/min_purchasers"
    n_customers = len(frame)
    if n_customers < tr.min_customers:
        raise InsufficientDataError(
            f"snapshot {as_of}: {n_customers} customers, at least "
            f"training.min_customers={tr.min_customers} are needed; {fix}"
        )
    n_purchasers = int((frame["future_orders"] > 0).sum())
    if n_purchasers < tr.min_purchasers:
        raise InsufficientDataError(
            f"snapshot {as_of}: {n_purchasers} customers purchase in the label window, at least "
            f"training.min_purchasers={tr.min_purchasers} are needed; {fix}"
        )
    if "churn" in tasks:
        n_active = int(frame["is_active"].sum())
        if n_active < tr.min_customers:
            raise InsufficientDataError(
                f"snapshot {as_of}: {n_active} active customers (a purchase in the last "
                f"{settings.labels.active_days} days), at least "
                f"training.min_customers={tr.min_customers} are needed; {fix}"
            )
        churned = frame.loc[frame["is_active"], "churned"]
        n_pos, n_neg = int((churned == 1).sum()), int((churned == 0).sum())
        need = max(10, tr.min_purchasers // 5)
        if min(n_pos, n_neg) < need:
            raise InsufficientDataError(
                f"snapshot {as_of}: {n_pos} churners and {n_neg} retained active customers; "
                f"each class needs at least {need} (training.min_purchasers / 5, at least 10) "
                f"to learn and evaluate churn; {fix}"
            )


def build_snapshots(
    tables: Tables,
    cutoffs: Sequence[pd.Timestamp],
    settings: Settings,
    progress: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """Stack the snapshots of ``cutoffs`` (oldest first), each row carrying its ``as_of``.

    Parameters
    ----------
    tables
        The input tables.
    cutoffs
        Snapshot dates, e.g. from :func:`snapshot_cutoffs`.
    settings
        Full settings.
    progress
        Called with a short step description before each snapshot (drives a CLI progress bar).

    Returns
    -------
    pandas.DataFrame
        The snapshots stacked, sorted by ``as_of``; ``(customer_id, as_of)`` is unique.
    """
    frames = []
    for cutoff in cutoffs:
        if progress is not None:
            progress(f"snapshot {as_cutoff(cutoff).date()}")
        frame = build_snapshot(tables, cutoff, settings)
        logger.info(
            "snapshot %s: %d customers, %d active",
            as_cutoff(cutoff).date(),
            len(frame),
            int(frame["is_active"].sum()),
        )
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)
