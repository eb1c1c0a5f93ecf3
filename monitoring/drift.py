"""Data drift and data quality: Evidently reports on a reference and a current feature frame.

:func:`check_drift` compares the training reference with the newest feature snapshot column by
column (Evidently ``DataDriftPreset`` for drift, ``DataSummaryPreset`` for the quality section of
the HTML report) and returns a typed :class:`DriftResult`; :func:`prediction_drift` does the same
on logged model scores. Column roles (numerical vs categorical) come from ``features.schema``.

By default every column is tested with a distance, so that a score means the same thing at any
sample size and *higher is more drift*: the normed Wasserstein distance (Wasserstein-1 divided by
the reference standard deviation) for numerical columns and the Jensen-Shannon distance for
categorical ones; a column drifts when its score reaches the threshold (0.1 by default, the
``monitoring.drift_threshold`` setting). Sampling noise alone gives a normed Wasserstein distance of
roughly ``1.1 / sqrt(n)`` for two samples of ``n`` rows each, so keep samples above ~1000 rows.

With ``noise_multiple`` set, each column's threshold is raised to that multiple of the distance
sampling noise alone would give on that column (:func:`noise_floor`, from the non-missing values
on each side and, for categorical columns, the number of categories): a survey column answered
by 300 customers cannot resolve a shift of 0.1 standard deviations, and no longer reports one.

References
----------
Evidently, "Data drift": https://docs.evidentlyai.com/metrics/explainer_drift
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.legacy.calculations.stattests.registry import get_stattest
from evidently.legacy.core import ColumnType
from evidently.presets import DataDriftPreset, DataSummaryPreset

from retentio.errors import ContractError
from retentio.features.schema import AS_OF, ENTITY, FEATURES, LABELS

logger = logging.getLogger(__name__)

NUMERICAL_DTYPES = frozenset({"float", "int"})
CATEGORICAL_DTYPES = frozenset({"category", "str", "bool"})
SCORE_COLUMNS: tuple[str, ...] = ("churn_probability", "predicted_ltv")
DEFAULT_NUM_METHOD = "wasserstein"
DEFAULT_CAT_METHOD = "jensenshannon"
_DEFAULT_THRESHOLD = 0.1  # Evidently's default for both distances
# Columns that are keys or outcomes, never monitored as inputs.
_NOT_MONITORED = frozenset({ENTITY, AS_OF, *LABELS})
_FEATURE_DTYPES = {f.name: f.dtype for f in FEATURES}


@dataclass(frozen=True)
class DriftResult:
    """What one drift check found.

    Attributes
    ----------
    drift_share
        Share of the tested columns that drifted, in [0, 1].
    drifted_columns
        The drifted columns, in the order they were tested.
    column_scores
        Column -> drift score (distance by default: higher means more drift).
    n_reference, n_current
        Rows of the reference and current frames (before sampling).
    missing_share_current
        Column -> share of missing values in the current frame (data quality).
    new_categories
        Categorical column -> values of the current frame never seen in the reference.
    html_path, json_path
        The Evidently HTML report and the JSON summary, when written.
    drift_threshold
        The per-column threshold used (``None``: Evidently's default for the method).
    methods
        Column -> drift method Evidently used.
    skipped_columns
        Columns not tested because they are empty in one of the frames.
    column_thresholds
        Column -> the threshold applied to it, when it differs from ``drift_threshold`` (raised
        to the noise floor, see ``noise_multiple`` in :func:`check_drift`).
    """

    drift_share: float
    drifted_columns: list[str]
    column_scores: dict[str, float]
    n_reference: int
    n_current: int
    missing_share_current: dict[str, float]
    new_categories: dict[str, list[str]]
    html_path: Path | None = None
    json_path: Path | None = None
    drift_threshold: float | None = None
    methods: dict[str, str] = field(default_factory=dict)
    skipped_columns: list[str] = field(default_factory=list)
    column_thresholds: dict[str, float] = field(default_factory=dict)

    @property
    def n_columns(self) -> int:
        """Number of columns tested for drift."""
        return len(self.column_scores)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy (paths as strings, plus ``n_columns``).

        Returns
        -------
        dict
            Every field of the result.
        """
        out = asdict(self)
        out["html_path"] = None if self.html_path is None else str(self.html_path)
        out["json_path"] = None if self.json_path is None else str(self.json_path)
        out["n_columns"] = self.n_columns
        return out


def column_roles(frame: pd.DataFrame, columns: list[str]) -> tuple[list[str], list[str]]:
    """Split columns into numerical and categorical ones, from the contract first.

    Contract features take their role from their ``Feature.dtype`` (``float``/``int`` numerical,
    ``category``/``str``/``bool`` categorical). Static ``cust_*`` attributes are categorical unless
    the column is numeric (a static ``cust_age`` stays numerical). Any other column (model scores)
    is numerical if its pandas dtype is numeric and not boolean, else categorical. Datetime columns
    are left out (Evidently does not test their drift here).

    Parameters
    ----------
    frame
        A frame holding the columns.
    columns
        The columns to classify.

    Returns
    -------
    tuple of list of str
        (numerical columns, categorical columns), each in the order of ``columns``.
    """
    numerical: list[str] = []
    categorical: list[str] = []
    for col in columns:
        series = frame[col]
        is_numeric = pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(
            series
        )
        dtype = _FEATURE_DTYPES.get(col)
        if dtype in NUMERICAL_DTYPES:
            numerical.append(col)
        elif dtype in CATEGORICAL_DTYPES:
            categorical.append(col)
        elif pd.api.types.is_datetime64_any_dtype(series):
            logger.warning("column %s is a datetime; it is not tested for drift", col)
        elif is_numeric:
            numerical.append(col)
        else:  # strings, booleans, categoricals; static cust_* strings land here
            categorical.append(col)
    return numerical, categorical


def _select_columns(
    reference: pd.DataFrame, current: pd.DataFrame, columns: list[str] | None, what: str
) -> list[str]:
    if reference.empty or len(reference.columns) == 0:
        raise ContractError(
            f"{what}: the reference frame is empty ({len(reference)} rows); "
            "pass the training snapshot's feature frame as reference"
        )
    if current.empty or len(current.columns) == 0:
        raise ContractError(
            f"{what}: the current frame is empty ({len(current)} rows); "
            "build the current feature snapshot first (`retentio features build`)"
        )
    if columns is not None:
        missing = {
            name: [c for c in columns if c not in frame.columns]
            for name, frame in (("reference", reference), ("current", current))
        }
        problems = [f"{name} lacks {cols}" for name, cols in missing.items() if cols]
        if problems:
            raise ContractError(
                f"{what}: requested columns are absent: {'; '.join(problems)}; "
                "pass only columns both frames share"
            )
        if not columns:
            raise ContractError(f"{what}: the list of columns to check is empty")
        return list(dict.fromkeys(columns))
    shared = [c for c in reference.columns if c in current.columns and c not in _NOT_MONITORED]
    if not shared:
        raise ContractError(
            f"{what}: reference and current frames share no feature column "
            f"(reference has {list(reference.columns)[:8]}, current has "
            f"{list(current.columns)[:8]}); build both with the same feature set"
        )
    return shared


def noise_floor(
    reference: np.ndarray | pd.Series, n_current: int, *, categorical: bool = False
) -> float:
    """The drift score two samples of one distribution show on average (sampling noise).

    Numerical columns (normed Wasserstein): with ``F`` the reference distribution, ``n`` and
    ``m`` the sample sizes, ``F_n - G_m`` behaves like ``sqrt(1/n + 1/m)`` times a Brownian
    bridge ``B(F(x))`` and ``E|B(t)| = sqrt(2 t (1 - t) / pi)``, so the expected distance is
    ``sqrt(2/pi) * sqrt(1/n + 1/m) * integral sqrt(F (1 - F)) dx / std`` (0.80 for a binary
    column, 1.26 for a normal one, times ``sqrt(1/n + 1/m)``); the integral is taken on the
    reference sample. Categorical columns (Jensen-Shannon distance, natural log): the divergence
    is about ``(k - 1) / 8 * (1/n + 1/m)`` for ``k`` categories (its second-order expansion, a
    chi-square over 8), and the distance its square root.

    Parameters
    ----------
    reference
        The reference values of the column (missing values are ignored).
    n_current
        Non-missing values on the current side.
    categorical
        Whether the column is categorical.

    Returns
    -------
    float
        The expected score under no drift (``inf`` when a side has no value).

    References
    ----------
    E. del Barrio, E. Gine and C. Matran, "Central limit theorems for the Wasserstein distance
    between the empirical and the true distributions", Annals of Probability 27 (1999).
    """
    values = pd.Series(reference).dropna()
    n = len(values)
    if n == 0 or n_current <= 0:
        return float("inf")
    spread = 1.0 / n + 1.0 / n_current
    if categorical:
        k = int(values.nunique())
        return float(np.sqrt(max(k - 1, 1) * spread / 8.0))
    x = np.sort(values.to_numpy(dtype="float64"))
    f = np.arange(1, n) / n
    shape = float(np.sum(np.sqrt(f * (1.0 - f)) * np.diff(x))) / max(float(np.std(x)), 0.001)
    return float(np.sqrt(2.0 / np.pi) * np.sqrt(spread) * shape)


def _column_thresholds(
    ref: pd.DataFrame,
    cur: pd.DataFrame,
    numerical: list[str],
    categorical: list[str],
    base: float,
    multiple: float,
) -> dict[str, float]:
    """Column -> max(base, multiple x noise floor), only where the floor wins."""
    out: dict[str, float] = {}
    for col in [*numerical, *categorical]:
        n_current = int(cur[col].notna().sum())
        floor = multiple * noise_floor(ref[col], n_current, categorical=col in categorical)
        if floor > base:
            out[col] = round(floor, 4)
    return out


def _sample(frame: pd.DataFrame, sample_size: int | None, rng: np.random.Generator) -> pd.DataFrame:
    if sample_size is None or len(frame) <= sample_size:
        return frame
    rows = np.sort(rng.choice(len(frame), size=sample_size, replace=False))
    return frame.iloc[rows]


def _prepare(frame: pd.DataFrame, numerical: list[str], categorical: list[str]) -> pd.DataFrame:
    """Evidently-friendly dtypes: float64 numerics (nullable ints break it), object categoricals."""
    out = pd.DataFrame(index=pd.RangeIndex(len(frame)))
    for col in numerical:
        out[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64").to_numpy()
    for col in categorical:
        values = frame[col].astype(object)
        out[col] = values.astype(str).where(values.notna(), np.nan).to_numpy()
    return out


def _new_categories(
    reference: pd.DataFrame, current: pd.DataFrame, categorical: list[str]
) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for col in categorical:
        seen = pd.Index(reference[col].dropna().astype(str).unique())
        now = pd.Index(current[col].dropna().astype(str).unique())
        new = now.difference(seen)
        if len(new):
            found[col] = sorted(new.tolist())
    return found


def _parse_snapshot(
    snapshot_dict: dict[str, Any],
) -> tuple[dict[str, float], dict[str, bool], dict[str, str], float | None]:
    """Column scores, drifted flags, methods and the drift share out of ``Snapshot.dict()``."""
    scores: dict[str, float] = {}
    methods: dict[str, str] = {}
    column_of: dict[str, str] = {}
    share: float | None = None
    for metric in snapshot_dict.get("metrics", []):
        config = metric.get("config", {})
        kind = str(config.get("type", ""))
        if kind.endswith(":ValueDrift"):
            col = config["column"]
            scores[col] = float(metric["value"])
            methods[col] = str(config.get("method"))
            column_of[metric["id"]] = col
        elif kind.endswith(":DriftedColumnsCount"):
            share = float(metric["value"]["share"])
    drifted: dict[str, bool] = {}
    for test in snapshot_dict.get("tests", []):
        col = column_of.get(test.get("metric_config", {}).get("metric_id"))
        if col is not None:
            drifted[col] = test.get("status") == "FAIL"
    return scores, drifted, methods, share


def _column_scores(
    ref: pd.DataFrame,
    cur: pd.DataFrame,
    numerical: list[str],
    categorical: list[str],
    num_method: str,
    cat_method: str,
) -> tuple[dict[str, float], dict[str, str]]:
    """Column -> drift score, with Evidently's own statistical tests (the functions its report
    calls per column, on the same inputs: infinities and missing values dropped), without
    rendering the report's plots."""
    scores: dict[str, float] = {}
    methods: dict[str, str] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for cols, kind, method in (
            (numerical, ColumnType.Numerical, num_method),
            (categorical, ColumnType.Categorical, cat_method),
        ):
            for col in cols:
                a = ref[col].replace([-np.inf, np.inf], np.nan).dropna()
                b = cur[col].replace([-np.inf, np.inf], np.nan).dropna()
                test = get_stattest(a, b, kind, method)
                scores[col] = float(test(a, b, kind, None).drift_score)
                methods[col] = method
    return scores, methods


def _report(
    ref: pd.DataFrame,
    cur: pd.DataFrame,
    *,
    numerical: list[str],
    categorical: list[str],
    num_method: str,
    cat_method: str,
    drift_threshold: float | None,
    thresholds: dict[str, float],
    include_summary: bool,
) -> Any:
    """Evidently's report (drift preset, optionally the data summary) as a Snapshot."""
    definition = DataDefinition(numerical_columns=numerical, categorical_columns=categorical)
    tested = list(ref.columns)
    presets: list[Any] = [
        DataDriftPreset(
            columns=tested,
            num_method=num_method,
            cat_method=cat_method,
            threshold=drift_threshold,
            per_column_threshold=thresholds or None,
        )
    ]
    if include_summary:
        presets.append(DataSummaryPreset(columns=tested))
    with warnings.catch_warnings():
        # constant columns make numpy/scipy warn inside Evidently's correlation and chi-square
        warnings.simplefilter("ignore", RuntimeWarning)
        return Report(presets, include_tests=True).run(
            Dataset.from_pandas(cur, data_definition=definition),
            Dataset.from_pandas(ref, data_definition=definition),
        )


def _check_agreement(
    snapshot_dict: dict[str, Any], scores: dict[str, float], drifted: list[str], what: str
) -> None:
    """The report must show the scores and verdicts the result holds (same Evidently tests)."""
    report_scores, flags, _, _ = _parse_snapshot(snapshot_dict)
    absent = [c for c in scores if c not in report_scores]
    if absent:
        raise ContractError(
            f"{what}: Evidently's report has no drift score for {absent}; "
            "check the evidently version (0.7.x expected)"
        )
    differ = [
        c
        for c, value in scores.items()
        if not np.isclose(report_scores[c], value, rtol=1e-9, atol=1e-12)
        or flags.get(c, False) != (c in drifted)
    ]
    if differ:
        raise ContractError(
            f"{what}: Evidently's report disagrees with the column tests on {differ}; "
            "check the evidently version (0.7.x expected)"
        )


def _run_check(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    columns: list[str] | None,
    drift_threshold: float | None,
    out_dir: Path | None,
    sample_size: int | None,
    seed: int,
    stem: str,
    num_method: str,
    cat_method: str,
    include_summary: bool,
    noise_multiple: float | None = None,
) -> DriftResult:
    what = stem.replace("_", " ")
    if sample_size is not None and sample_size <= 0:
        raise ContractError(f"{what}: sample_size must be positive or None, got {sample_size}")
    if drift_threshold is not None and drift_threshold <= 0:
        raise ContractError(f"{what}: drift_threshold must be positive, got {drift_threshold}")
    selected = _select_columns(reference, current, columns, what)
    numerical, categorical = column_roles(reference, selected)

    missing_share = {c: float(current[c].isna().mean()) for c in [*numerical, *categorical]}
    new_categories = _new_categories(reference, current, categorical)

    rng = np.random.default_rng(seed)
    ref = _prepare(_sample(reference, sample_size, rng), numerical, categorical)
    cur = _prepare(_sample(current, sample_size, rng), numerical, categorical)

    empty = [c for c in [*numerical, *categorical] if ref[c].isna().all() or cur[c].isna().all()]
    if empty:
        logger.warning("%s: columns empty in one frame, not tested: %s", what, empty)
    numerical = [c for c in numerical if c not in empty]
    categorical = [c for c in categorical if c not in empty]
    roles = {*numerical, *categorical}
    tested = [c for c in selected if c in roles]  # the caller's (or the frame's) column order
    if not tested:
        raise ContractError(
            f"{what}: no column left to test ({len(empty)} columns are empty in the reference or "
            "the current frame); check that the feature snapshots were built"
        )

    thresholds: dict[str, float] = {}
    if noise_multiple is not None:
        base = _DEFAULT_THRESHOLD if drift_threshold is None else drift_threshold
        thresholds = _column_thresholds(ref, cur, numerical, categorical, base, noise_multiple)
    logger.info(
        "%s: %d columns, %d reference and %d current rows (sampled from %d and %d)",
        what,
        len(tested),
        len(ref),
        len(cur),
        len(reference),
        len(current),
    )
    scores, methods = _column_scores(ref, cur, numerical, categorical, num_method, cat_method)
    scores = {c: scores[c] for c in tested}
    limit = _DEFAULT_THRESHOLD if drift_threshold is None else drift_threshold
    drifted = [c for c in tested if scores[c] >= thresholds.get(c, limit)]
    drift_share = len(drifted) / len(tested)
    snapshot = None
    if out_dir is not None:  # the HTML report: Evidently renders a plot per column (slow)
        snapshot = _report(
            ref[tested],
            cur[tested],
            numerical=numerical,
            categorical=categorical,
            num_method=num_method,
            cat_method=cat_method,
            drift_threshold=drift_threshold,
            thresholds=thresholds,
            include_summary=include_summary,
        )
        _check_agreement(snapshot.dict(), scores, drifted, what)

    result = DriftResult(
        drift_share=float(drift_share),
        drifted_columns=drifted,
        column_scores=scores,
        n_reference=len(reference),
        n_current=len(current),
        missing_share_current=missing_share,
        new_categories=new_categories,
        drift_threshold=drift_threshold,
        methods={c: methods[c] for c in tested},
        skipped_columns=empty,
        column_thresholds=thresholds,
    )
    if out_dir is not None and snapshot is not None:  # the snapshot is made when out_dir is set
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        html_path = out_dir / f"{stem}_report.html"
        json_path = out_dir / f"{stem}_summary.json"
        snapshot.save_html(str(html_path))
        result = _with_paths(result, html_path, json_path)
        json_path.write_text(json.dumps(_finite(result.to_dict()), indent=2, allow_nan=False))
        logger.info("%s: wrote %s and %s", what, html_path, json_path)
    logger.info(
        "%s: %d of %d columns drifted (share %.3f)", what, len(drifted), len(tested), drift_share
    )
    return result


def with_population(
    result: DriftResult,
    *,
    n_reference: int,
    n_current: int,
    missing_share_current: Mapping[str, float],
    new_categories: Mapping[str, Collection[str]],
) -> DriftResult:
    """``result`` of a check run on samples, with the figures of the whole populations.

    The column scores and thresholds stay those of the samples; the row counts, the current
    missing shares and the new categories are replaced by the populations' (measured
    elsewhere, e.g. partition by partition), and the JSON summary is rewritten.

    Parameters
    ----------
    result
        What :func:`check_drift` found on the samples.
    n_reference, n_current
        Rows of the reference and current populations.
    missing_share_current
        Column -> share of missing values in the current population (the result's columns).
    new_categories
        Categorical column -> values of the current population never seen in the reference.

    Returns
    -------
    DriftResult
    """
    values = {k: getattr(result, k) for k in result.__dataclass_fields__}
    values.update(
        n_reference=int(n_reference),
        n_current=int(n_current),
        missing_share_current={
            c: float(missing_share_current.get(c, share))
            for c, share in result.missing_share_current.items()
        },
        new_categories={c: sorted(v) for c, v in new_categories.items() if v},
    )
    out = DriftResult(**values)
    if out.json_path is not None:
        out.json_path.write_text(json.dumps(_finite(out.to_dict()), indent=2, allow_nan=False))
    return out


def _with_paths(result: DriftResult, html_path: Path, json_path: Path) -> DriftResult:
    values = {k: getattr(result, k) for k in result.__dataclass_fields__}
    values.update(html_path=html_path, json_path=json_path)
    return DriftResult(**values)


def _finite(value: Any) -> Any:
    """Strict-JSON copy: NumPy scalars to Python, NaN/inf to ``None``."""
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def check_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    columns: list[str] | None = None,
    drift_threshold: float | None = None,
    out_dir: Path | None = None,
    sample_size: int | None = 50_000,
    seed: int = 0,
    num_method: str = DEFAULT_NUM_METHOD,
    cat_method: str = DEFAULT_CAT_METHOD,
    include_summary: bool = True,
    noise_multiple: float | None = None,
) -> DriftResult:
    """Compare a current feature frame with the reference, column by column, with Evidently.

    Parameters
    ----------
    reference
        The training reference (e.g. the validation snapshot's features).
    current
        The newest feature snapshot.
    columns
        Columns to test; default: every column both frames share except ``customer_id``,
        ``as_of`` and label columns.
    drift_threshold
        Per-column threshold on the drift score (``monitoring.drift_threshold``); ``None`` uses
        Evidently's default for the method (0.1 for the default distances).
    out_dir
        When given, ``drift_report.html`` (Evidently: drift and data summary) and
        ``drift_summary.json`` (:meth:`DriftResult.to_dict`) are written there.
    sample_size
        Rows drawn (without replacement, reproducibly) from each frame larger than this;
        ``None`` uses every row. Missing shares and new categories use the full frames.
    seed
        Seed of the sampling.
    num_method, cat_method
        Evidently drift methods for numerical and categorical columns.
    include_summary
        Add Evidently's ``DataSummaryPreset`` (per-column statistics) to the report. It costs
        about as much as the drift itself (its plots, per column), so turn it off when only the
        numbers matter.
    noise_multiple
        When given, a column drifts only if its score also reaches this multiple of the score
        sampling noise alone would give it (:func:`noise_floor`; ``monitoring.noise_multiple``).

    Returns
    -------
    DriftResult
        Drift share, drifted columns, scores, data-quality figures and report paths.

    Raises
    ------
    ContractError
        A frame is empty, the frames share no column, a requested column is absent, or every
        column is empty.
    """
    return _run_check(
        reference,
        current,
        columns=columns,
        drift_threshold=drift_threshold,
        out_dir=out_dir,
        sample_size=sample_size,
        seed=seed,
        stem="drift",
        num_method=num_method,
        cat_method=cat_method,
        include_summary=include_summary,
        noise_multiple=noise_multiple,
    )


def prediction_drift(
    reference_scores: pd.DataFrame,
    current_scores: pd.DataFrame,
    columns: tuple[str, ...] | list[str] = SCORE_COLUMNS,
    *,
    drift_threshold: float | None = None,
    out_dir: Path | None = None,
    sample_size: int | None = 50_000,
    seed: int = 0,
    include_summary: bool = True,
    noise_multiple: float | None = None,
) -> DriftResult:
    """Compare the distribution of model scores now with the scores at training time.

    Parameters
    ----------
    reference_scores
        Scores on the reference (e.g. validation) customers.
    current_scores
        Scores logged recently (e.g. the prediction log).
    columns
        Score columns to compare.
    drift_threshold, out_dir, sample_size, seed, include_summary, noise_multiple
        As in :func:`check_drift`; files are ``prediction_drift_report.html`` and
        ``prediction_drift_summary.json``.

    Returns
    -------
    DriftResult
        The same result as :func:`check_drift`, on the score columns.

    Raises
    ------
    ContractError
        A frame is empty or lacks a score column.
    """
    return _run_check(
        reference_scores,
        current_scores,
        columns=list(columns),
        drift_threshold=drift_threshold,
        out_dir=out_dir,
        sample_size=sample_size,
        seed=seed,
        stem="prediction_drift",
        num_method=DEFAULT_NUM_METHOD,
        cat_method=DEFAULT_CAT_METHOD,
        include_summary=include_summary,
        noise_multiple=noise_multiple,
    )
