"""The persisted scored population: every customer's scores, keyed by model versions and date.

``retentio score``, ``retentio cycle`` and the service (when it finds no valid file) write one
Arrow IPC file per (champion versions, feature date) under ``<paths.artifacts>/population/``;
``retentio at-risk``, the service and its workers read it instead of scoring again. The file is
opened with ``pyarrow.memory_map``: its columns are views of the operating system's page cache,
so several workers on one machine share one copy.

What a file holds (one row per customer, rows sorted by :func:`id_keys`)
-----------------------------------------------------------------------
- ``customer_id`` and every score column of :data:`SCORE_COLUMNS` at the feature date;
- ``_key``: the 64-bit hash of the id the rows are sorted by (a lookup is a binary search);
- ``_rank``: row positions ordered by value at risk, highest first (the at-risk order);
- ``_x``: the churn model's input exactly as LightGBM reads it (categories as codes), from which
  the top reasons of any row are computed on demand (TreeSHAP, ~0.3 ms a row) and phrased;
- ``reasons``: the phrased top reasons of the ``serving.precomputed_reasons`` rows with the
  largest value at risk (null elsewhere: computed when a request returns the row).

The schema metadata (``retentio.population``) records the key (``model_versions``,
``feature_date``), the value x potential ``thresholds`` of the population, the reason columns
and categories, what it was built from (``source``) and when (``written_at``). A file whose key
differs from what is being served is never read: callers look files up by key
(:func:`find_population`) and compute a new one otherwise.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
from pandas._libs.hashing import hash_object_array

from retentio.configs.settings import Settings
from retentio.errors import ContractError
from retentio.features.cutoff import as_cutoff
from retentio.features.schema import ENTITY, FEATURE_SET_VERSION
from retentio.serving.atrisk import AtRiskFilters, keep_mask
from retentio.serving.reasons import MIN_CONTRIBUTION, Reason, explain, phrase_reasons

if TYPE_CHECKING:  # reading a population needs no model code (a light `retentio at-risk`)
    from retentio.training.lgbm import SharedInputs
    from retentio.training.task_model import TaskModel

logger = logging.getLogger(__name__)

__all__ = [
    "FORMAT",
    "META_KEY",
    "PersistedPopulation",
    "ReasonExplainer",
    "BuildCounts",
    "BuiltPopulation",
    "build_population",
    "filter_population",
    "find_population",
    "first_kept",
    "id_keys",
    "latest_meta",
    "population_dir",
    "population_lock",
    "read_candidates",
    "write_candidates",
    "select_population",
    "write_population",
]

FORMAT = 2
"""Version of the file layout (2: ``channel`` and ``note`` columns); other versions are ignored."""
META_KEY = b"retentio.population"
KEEP_FILES = 4
"""Population files kept per folder (the newest); older ones are deleted after a write."""
_HASH_KEY = "0123456789123456"  # 16 bytes, fixed: keys are stored in the files
_DATES = ("as_of", "expected_next_purchase_date")  # stored as int64 ns (NaT = int64 min)


def population_dir(settings: Settings) -> Path:
    """``<paths.artifacts>/population``."""
    return Path(settings.paths.artifacts) / "population"


def id_keys(customer_ids: Sequence[str] | np.ndarray) -> np.ndarray:
    """The 64-bit keys the rows are sorted by: SipHash-2-4 of the id's UTF-8 text.

    pandas' Cython SipHash (the one behind ``pandas.util.hash_array``, without its
    post-mixing) costs microseconds for one id, where the public wrapper costs ~0.3 ms.
    """
    ids = np.asarray([str(c) for c in customer_ids], dtype=object)
    return hash_object_array(ids, _HASH_KEY)


def _versions_tag(versions: Mapping[str, str]) -> str:
    text = json.dumps(dict(sorted(versions.items())), separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=4).hexdigest()


def _date_text(date: Any) -> str:
    return as_cutoff(date).date().isoformat()


# ---------------------------------------------------------------------------------------------
# reasons
# ---------------------------------------------------------------------------------------------


class _XRow(Mapping[str, Any]):
    """One row of the reason matrix as feature name -> value (categories decoded)."""

    __slots__ = ("_explainer", "_row")

    def __init__(self, explainer: ReasonExplainer, row: np.ndarray) -> None:
        self._explainer, self._row = explainer, row

    def __getitem__(self, key: str) -> Any:
        j = self._explainer.index[key]
        value = self._row[j]
        cats = self._explainer.categories.get(key)
        if cats is None:
            return value
        return np.nan if np.isnan(value) else cats[int(value)]

    def __iter__(self) -> Iterator[str]:
        return iter(self._explainer.columns)

    def __len__(self) -> int:
        return len(self._explainer.columns)


class ReasonExplainer:
    """Top reasons from the churn model's LightGBM TreeSHAP, on the model's own input matrix.

    Parameters
    ----------
    model
        The churn model (its ``estimator`` pipeline: ``cast`` then a LightGBM ``model``).
    columns
        The model's input columns, in order.
    categories
        Categories of the cast columns (code ``i`` is ``categories[col][i]``).
    n_reasons
        Phrases per row.
    """

    def __init__(
        self,
        model: TaskModel,
        columns: Sequence[str],
        categories: Mapping[str, Sequence[Any]],
        *,
        n_reasons: int = 3,
    ) -> None:
        self.model = model
        self.columns = list(columns)
        self.index = {c: j for j, c in enumerate(self.columns)}
        self.categories = {c: list(v) for c, v in categories.items()}
        self.n_reasons = n_reasons
        self.booster = model.estimator.named_steps["model"].booster_  # type: ignore[attr-defined]

    @classmethod
    def from_model(cls, model: TaskModel | None, *, n_reasons: int = 3) -> ReasonExplainer | None:
        """An explainer for ``model``, or None when it has no LightGBM contributions."""
        if model is None or model.task != "churn" or model.candidate not in ("lightgbm", "blend"):
            return None
        pipe = getattr(model, "estimator", None)
        steps = getattr(pipe, "named_steps", {})
        if "cast" not in steps or not hasattr(steps.get("model"), "booster_"):
            return None
        cats = {c: list(v) for c, v in steps["cast"].categories_.items()}
        return cls(model, model.model_columns, cats, n_reasons=n_reasons)

    def matrix(self, features: pd.DataFrame, inputs: SharedInputs | None = None) -> np.ndarray:
        """The model's input as LightGBM reads it: floats, categories as codes (NaN = none).

        ``inputs``: the shared LightGBM matrices of ``features`` the churn model was scored
        with (batch scoring); the churn model's is this matrix, read without building it again.
        """
        pipe = self.model.estimator  # type: ignore[attr-defined]
        caster = pipe.named_steps["cast"]
        booster_cats = self.booster.pandas_categorical or []
        same_codes = [list(v) for v in caster.categories_.values()] == [
            list(v) for v in booster_cats
        ]
        have = all(c in features.columns for c in self.columns)
        if have and inputs is not None and inputs.frame is features and same_codes:
            shared = inputs.matrix(pipe, self.columns)
            if shared is not None:
                return shared
        # the model's input columns read where they are (the btyd_* columns computed when
        # missing); only the category columns are cast, not a copy of the whole input
        source = features if have else self.model.model_input(features)
        cast_columns = list(caster.categories_)
        cast = caster.transform(source[cast_columns])
        out = np.empty((len(source), len(self.columns)), dtype=np.float64)
        for j, col in enumerate(self.columns):
            values = cast[col] if col in caster.categories_ else source[col]
            if isinstance(values.dtype, pd.CategoricalDtype):
                codes = values.cat.codes.to_numpy().astype(np.float64)
                codes[codes < 0] = np.nan
                out[:, j] = codes
            else:
                out[:, j] = values.to_numpy(dtype=np.float64, na_value=np.nan)
        return out

    def contributions(self, x: np.ndarray, *, threads: int | None = None) -> np.ndarray:
        """TreeSHAP values per column (log-odds), without the bias column.

        ``threads``: default one below 10,000 rows (OpenMP start-up and spinning cost more
        than a few rows' work: one row ~40 ms with the default threads on a busy machine,
        ~1 ms with one; and the background candidates stay on one core), two above.
        """
        if threads is None:
            threads = min(2, os.cpu_count() or 1) if len(x) >= 10_000 else 1
        values = self.booster.predict(x, pred_contrib=True, num_threads=threads)
        return np.asarray(values)[:, : len(self.columns)]

    def reasons(self, x: np.ndarray, *, threads: int | None = None) -> list[list[str]]:
        """The phrased top reasons of each row of ``x`` (risk-raising contributions only);
        ``threads`` as in :meth:`contributions`."""
        if len(x) == 0:
            return []
        return self.phrase(x, self.candidates(x, threads=threads))

    def candidates(self, x: np.ndarray, *, threads: int | None = None) -> np.ndarray:
        """Each row's strongest risk-raising columns (positions, strongest first, -1 after the
        last), from which :meth:`phrase` words the reasons: what a row's reasons need from
        TreeSHAP, small enough to keep for every customer (:class:`ReasonCandidates`)."""
        contrib = self.contributions(x, threads=threads)
        k = min(self.n_reasons * 3, contrib.shape[1])  # room for merged phrases
        order = np.argsort(-contrib, axis=1, kind="stable")[:, :k]
        positive = np.take_along_axis(contrib, order, axis=1) >= MIN_CONTRIBUTION
        return np.where(positive, order, -1).astype(np.int16)

    def phrase(self, x: np.ndarray, candidates: np.ndarray) -> list[list[str]]:
        """The phrased reasons of rows ``x`` from their :meth:`candidates` (no TreeSHAP)."""
        return [  # formatting of the returned rows only
            phrase_reasons(
                _XRow(self, row),
                [self.columns[j] for j in pos if j >= 0],
                n_reasons=self.n_reasons,
            )
            for row, pos in zip(x, candidates, strict=True)
        ]

    def explain(
        self,
        row: np.ndarray,
        *,
        typical: Mapping[str, float] | None = None,
        n_reasons: int = 5,
    ) -> list[Reason]:
        """One row's risk-raising reasons with the values they quote (the customer card).

        Parameters
        ----------
        row
            One row of the reason matrix (``PersistedPopulation.x``).
        typical
            Population medians quoted beside the customer's values.
        n_reasons
            At most this many reasons.
        """
        contrib = self.contributions(row[None, :])[0]
        order = np.argsort(-contrib, kind="stable")[: n_reasons * 3]
        names = [self.columns[j] for j in order if contrib[j] >= MIN_CONTRIBUTION]
        return explain(_XRow(self, row), names, typical=typical, n_reasons=n_reasons)


# ---------------------------------------------------------------------------------------------
# building and writing
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildCounts:
    """Work done by :func:`build_population` (what a restart with a valid file skips)."""

    rows_scored: int
    reasons_computed: int


@dataclass(frozen=True)
class BuiltPopulation:
    """What :func:`build_population` made: the table to write, the score frame (rows in the
    input's order) and the work counts."""

    table: pa.Table
    scores: pd.DataFrame
    counts: BuildCounts
    order: np.ndarray | None = None  # the input row of each file row (file row i: order[i])


def build_population(
    models: dict[str, TaskModel],
    versions: Mapping[str, str],
    features: pd.DataFrame,
    settings: Settings,
    *,
    feature_date: Any,
    source: Mapping[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
    thresholds: Mapping[str, float] | None = None,
) -> BuiltPopulation:
    """Score every customer of ``features`` and lay the result out as a population table.

    Parameters
    ----------
    models
        Champion model per task.
    versions
        Their registry versions (the key).
    features
        One feature row per customer at ``feature_date``.
    settings
        ``actions`` (thresholds, bands), ``serving.precomputed_reasons``.
    feature_date
        The date the features describe (the key).
    source
        What the features came from (stored in the metadata, e.g. the online store's
        ``built_at`` or the data folder's fingerprint).
    progress
        Called with a short description before each step.
    thresholds
        The value x potential thresholds to score with (default: those of ``features``
        themselves). The service passes those of the store's population at the store date, so
        a population built at a later scoring date judges customers as the store date did.

    Returns
    -------
    BuiltPopulation
        The table (see the module docstring), the :func:`score_all` frame and the work counts.
    """
    from retentio.serving.scoring import (
        SCORE_COLUMNS,
        _with_shared_btyd,
        score_all,
        score_thresholds,
    )

    step = progress or (lambda _: None)
    if features[ENTITY].duplicated().any():
        raise ContractError("the population must hold one row per customer; ids repeat")
    # the btyd_* columns once, shared by score_all and the reason inputs (as score_all would)
    if not isinstance(features.index, pd.RangeIndex) or features.index.start != 0:
        features = features.reset_index(drop=True)
    features = _with_shared_btyd(models, features)
    limits = dict(thresholds) if thresholds is not None else None
    from retentio.training.lgbm import SharedInputs

    inputs = SharedInputs(features)  # the churn model's matrix is also the reason matrix
    scored = score_all(
        models, features, settings, progress=progress, thresholds=limits, inputs=inputs
    )
    if limits is None:
        limits = score_thresholds(features, scored, settings)
    step("population: order and reason inputs")
    ids = features[ENTITY].astype(str).to_numpy(dtype=object)
    keys = id_keys(ids)
    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    var = scored["value_at_risk"].to_numpy(dtype=float)[order]
    rank = _ranks(var)
    explainer = ReasonExplainer.from_model(models.get("churn"))
    # each column taken in key order on its own (no reordered copy of the whole score frame)
    arrays = {col: _encode(scored[col], order) for col in SCORE_COLUMNS if col != ENTITY}
    arrays = {ENTITY: pa.array(ids[order], pa.string()), **arrays}
    arrays["_key"] = pa.array(keys, pa.uint64())
    arrays["_rank"] = pa.array(rank, pa.int32())
    n_reasons = 0
    reasons: list[Any] = [None] * len(scored)
    meta: dict[str, Any] = {}
    if explainer is not None:
        x = explainer.matrix(features, inputs)[order]  # rows in key order, like the scores
        arrays["_x"] = pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), x.shape[1])
        top = rank[: settings.serving.precomputed_reasons]
        step(f"population: reasons of the top {len(top):,}")
        # ~1 ms of TreeSHAP a row: the batch job's rows on both cores
        both = min(2, os.cpu_count() or 1)
        for pos, why in zip(top, explainer.reasons(x[top], threads=both), strict=True):
            reasons[pos] = why
        n_reasons = len(top)
        meta = {"reason_columns": explainer.columns, "categories": explainer.categories}
    arrays["reasons"] = pa.array(reasons, pa.list_(pa.string()))
    meta.update(
        format=FORMAT,
        model_versions=dict(versions),
        feature_date=_date_text(feature_date),
        feature_set_version=FEATURE_SET_VERSION,
        n_customers=len(scored),
        n_reasons_precomputed=n_reasons,
        thresholds=limits,
        source=dict(source or {}),
    )
    table = pa.table(arrays)
    table = table.replace_schema_metadata({META_KEY: json.dumps(meta, default=str).encode()})
    counts = BuildCounts(rows_scored=len(scored), reasons_computed=n_reasons)
    return BuiltPopulation(table, scored, counts, order)


def _ranks(var: np.ndarray) -> np.ndarray:
    """Row positions by value at risk, highest first (NaN last, ties by position)."""
    return np.lexsort((np.arange(len(var)), -np.nan_to_num(var, nan=-np.inf))).astype(np.int32)


def filter_population(table: pa.Table, keep: pa.Array | np.ndarray) -> pa.Table:
    """A population table without some rows (``keep`` false), still valid to serve.

    The rows stay sorted by key; ``_rank`` (positions) and the row count are recomputed.
    """
    kept = table.filter(keep)
    var = kept.column("value_at_risk").to_numpy()
    index = kept.column_names.index("_rank")
    kept = kept.set_column(index, "_rank", pa.array(_ranks(var), pa.int32()))
    raw = (table.schema.metadata or {}).get(META_KEY)
    if raw is not None:
        meta = json.loads(raw)
        meta["n_customers"] = kept.num_rows
        kept = kept.replace_schema_metadata({META_KEY: json.dumps(meta, default=str).encode()})
    return kept


def _encode(values: pd.Series, order: np.ndarray) -> pa.Array:
    """A score column as stored, rows taken in ``order``: numbers as float64, dates as int64
    nanoseconds (NaT = int64 min), text as a dictionary with nulls encoded (so every column
    reads back zero-copy), its entries in order of first appearance in the stored rows (as
    Arrow's ``dictionary_encode``)."""
    if values.name in _DATES:
        days = pd.to_datetime(values).to_numpy(dtype="datetime64[ns]")[order]
        return pa.array(days.view(np.int64), pa.int64())
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return pa.array(values.to_numpy(dtype=np.float64)[order], pa.float64())
    # codes of the distinct values (a column holds a handful), then only integers move
    codes, uniques = pd.factorize(values.to_numpy(dtype=object), use_na_sentinel=False)
    uniques = np.asarray(uniques, dtype=object)
    missing = np.flatnonzero(pd.isna(uniques))
    if len(missing) > 1:  # None and NaN: one null entry
        same = np.arange(len(uniques))
        same[missing] = missing[0]
        codes = same[codes]
    codes = codes[order]
    present, first = np.unique(codes, return_index=True)
    seen = present[np.argsort(first, kind="stable")]  # codes in order of first appearance
    position = np.zeros(len(uniques), dtype=np.int32)
    position[seen] = np.arange(len(seen), dtype=np.int32)
    labels = [None if pd.isna(u) else u for u in uniques[seen]]
    return pa.DictionaryArray.from_arrays(
        pa.array(position[codes], pa.int32()), pa.array(labels, pa.string())
    )


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_population(table: pa.Table, folder: Path, *, keep: int = KEEP_FILES) -> Path:
    """Write ``table`` atomically as ``population_<date>_<versions>.arrow`` under ``folder``.

    The file is written beside its final name, fsynced and renamed (readers never see a partial
    file); leftover temporary files and all but the ``keep`` newest population files go.

    Returns
    -------
    Path
        The file written.
    """
    meta = json.loads(table.schema.metadata[META_KEY])
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"population_{meta['feature_date']}_{_versions_tag(meta['model_versions'])}.arrow"
    path = folder / name
    meta["written_at"] = dt.datetime.now(dt.UTC).isoformat()
    table = table.replace_schema_metadata({META_KEY: json.dumps(meta, default=str).encode()})
    tmp = folder / f".{name}.{os.getpid()}.tmp"
    try:
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table.combine_chunks())
        with tmp.open("rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(folder)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    for old in folder.glob(".population_*.tmp"):  # left by a killed writer
        if not _writer_alive(old):
            old.unlink(missing_ok=True)
    files = sorted(folder.glob("population_*.arrow"), key=lambda p: p.stat().st_mtime_ns)
    for old in files[:-keep]:
        if old != path:
            old.unlink(missing_ok=True)
    logger.info("population of %d customers written to %s", meta["n_customers"], path)
    return path


def _writer_alive(tmp: Path) -> bool:
    """Whether the process that names a temporary file (``.<name>.<pid>.tmp``) still runs."""
    try:
        pid = int(tmp.name.split(".")[-2])
        os.kill(pid, 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def population_lock(folder: Path) -> Iterator[None]:
    """An exclusive lock on ``folder`` (one process builds a population, the others wait)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".lock").open("a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


# ---------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------


def read_meta(path: Path) -> dict[str, Any]:
    """The metadata of a population file (reads the footer only)."""
    with pa.memory_map(str(path), "r") as source:
        schema = pa.ipc.open_file(source).schema
    raw = (schema.metadata or {}).get(META_KEY)
    if raw is None:
        raise ContractError(f"{path} is not a retentio population file (no metadata)")
    return dict(json.loads(raw))


def find_population(
    folder: Path,
    *,
    versions: Mapping[str, str],
    feature_date: Any,
    accept: Callable[[dict[str, Any]], bool] | None = None,
) -> Path | None:
    """The newest population file under ``folder`` with exactly this key, or None.

    Parameters
    ----------
    folder
        The population folder.
    versions
        Model version per task: must equal the file's.
    feature_date
        Must equal the file's.
    accept
        A further test of the metadata (e.g. written after the online store was built).
    """
    folder = Path(folder)
    date = _date_text(feature_date)
    name = f"population_{date}_{_versions_tag(versions)}.arrow"
    path = folder / name
    if not path.exists():
        return None
    try:
        meta = read_meta(path)
    except (OSError, pa.ArrowInvalid, ContractError, ValueError) as exc:
        logger.warning("ignoring unreadable population file %s: %s", path, exc)
        return None
    same = (
        meta.get("format") == FORMAT
        and meta.get("model_versions") == dict(versions)
        and meta.get("feature_date") == date
        and meta.get("feature_set_version") == FEATURE_SET_VERSION
    )
    if not same or (accept is not None and not accept(meta)):
        return None
    return path


def select_population(
    folder: Path, *, versions: Mapping[str, str], accept: Callable[[dict[str, Any]], bool]
) -> Path | None:
    """The newest population file of these model versions whose metadata ``accept`` takes."""
    for path, meta in latest_meta(folder):
        same = (
            meta.get("format") == FORMAT
            and meta.get("model_versions") == dict(versions)
            and meta.get("feature_set_version") == FEATURE_SET_VERSION
        )
        if same and accept(meta):
            return path
    return None


def latest_meta(folder: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Every readable population file under ``folder`` with its metadata, newest first."""
    out = []
    files = sorted(Path(folder).glob("population_*.arrow"), key=lambda p: -p.stat().st_mtime_ns)
    for path in files:
        with contextlib.suppress(OSError, pa.ArrowInvalid, ContractError, ValueError):
            out.append((path, read_meta(path)))
    return out


def candidates_path(population: PersistedPopulation) -> Path:
    """``<population file stem>.reasons-<stamp>.npy``: the stamp is that of the file's
    ``written_at``, so candidates of a file since rewritten under the same name are not its."""
    written = str(population.meta.get("written_at", ""))
    stamp = hashlib.blake2b(written.encode(), digest_size=4).hexdigest()
    return population.path.with_name(f"{population.path.stem}.reasons-{stamp}.npy")


def read_candidates(population: PersistedPopulation) -> np.ndarray | None:
    """The kept reason candidates of ``population`` (memory-mapped), or None."""
    path = candidates_path(population)
    if not path.is_file():
        return None
    try:
        values = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        logger.warning("ignoring unreadable reason candidates %s: %s", path, exc)
        return None
    if values.ndim != 2 or len(values) != len(population) or values.dtype != np.int16:
        logger.warning("ignoring reason candidates %s: not this population's shape", path)
        return None
    return values


def write_candidates(
    population: PersistedPopulation,
    explainer: ReasonExplainer,
    *,
    chunk: int = 2_000,
    stop: Callable[[], bool] | None = None,
) -> Path | None:
    """Compute every row's reason candidates (:meth:`ReasonExplainer.candidates`) and keep
    them beside the population file (:func:`candidates_path`).

    Chunk by chunk on one thread, so it can run beside requests, into a partial file beside the
    final one (``.<name>.partial``, rows not computed yet marked -2, synced after each chunk);
    ``stop()`` true between two chunks leaves it there (None returned) and the next call goes
    on from its first row not computed, so a service stopped midway loses at most one chunk.
    The complete file is renamed into place. Candidates of other files (gone or rewritten)
    are deleted.

    Returns
    -------
    Path or None
        The candidates file, or None when stopped (or the population has no reason inputs).
    """
    x = population.x
    if x is None:
        return None
    path = candidates_path(population)
    partial = path.with_name(f".{path.name}.partial")
    shape = (len(x), min(explainer.n_reasons * 3, x.shape[1]))
    out = _partial_candidates(partial, shape)
    todo = np.flatnonzero(out[:, 0] == _NOT_COMPUTED) if len(out) else np.array([], dtype=int)
    first = int(todo[0]) if len(todo) else len(out)
    for start in range(first, len(x), chunk):
        if stop is not None and stop():
            out.flush()
            return None
        out[start : start + chunk] = explainer.candidates(x[start : start + chunk])
        out.flush()
    del out
    os.replace(partial, path)
    _fsync_dir(path.parent)
    for old in [*path.parent.glob("population_*.reasons-*.npy"), *path.parent.glob(".*.partial")]:
        stem = old.name.lstrip(".").split(".reasons-")[0]  # candidates of a rewritten or gone file
        if old != path and (
            stem == population.path.stem or not (old.parent / f"{stem}.arrow").exists()
        ):
            old.unlink(missing_ok=True)
    logger.info("reason candidates of %d customers kept in %s", len(x), path)
    return path


_NOT_COMPUTED = -2  # a row of a partial candidates file not computed yet


def _partial_candidates(path: Path, shape: tuple[int, int]) -> np.memmap:
    """The partial candidates file (memory-mapped for writing): the one left by a stopped
    computation when it has this shape, else a new one with every row not computed."""
    if path.is_file():
        try:
            out = np.load(path, mmap_mode="r+")
            if isinstance(out, np.memmap) and out.shape == shape and out.dtype == np.int16:
                return out
        except (OSError, ValueError):
            pass
        path.unlink(missing_ok=True)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.int16, shape=shape)
    out[:] = _NOT_COMPUTED
    out.flush()
    return out


def _array(column: pa.ChunkedArray) -> pa.Array:
    """One array of a column: its only chunk as it is (a view of the mapped file; a file is
    written as one record batch), else the chunks concatenated (a copy)."""
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def _view(array: pa.Array) -> np.ndarray:
    """A fixed-width array without nulls as a NumPy view of its buffer (no copy, no scan).

    ``pyarrow.Array.to_numpy(zero_copy_only=True)`` is also a view, but costs ~25 ns an element
    (1.6 s for the 67 million values of a 1M-row reason matrix); this is constant time.
    """
    dtype = np.dtype(array.type.to_pandas_dtype())
    if array.null_count or dtype.kind not in "iuf":
        return array.to_numpy(zero_copy_only=True)
    start = array.offset * dtype.itemsize
    return np.frombuffer(array.buffers()[1], dtype=dtype, count=len(array), offset=start)


def first_kept(order: np.ndarray, mask: np.ndarray, n: int) -> np.ndarray:
    """The first ``n`` entries of ``order`` whose row ``mask`` keeps (``order[mask[order]][:n]``
    without gathering the whole order: chunks from the front, growing, until ``n`` are found)."""
    parts: list[np.ndarray] = []
    found, start, step = 0, 0, max(4096, 2 * n)
    while found < n and start < len(order):
        chunk = order[start : start + step]
        kept = chunk[mask[chunk]]
        parts.append(kept)
        found += len(kept)
        start += step
        step *= 4
    if not parts:
        return order[:0]
    return np.concatenate(parts)[:n]


class _PopulationColumns:
    """:class:`serving.atrisk.Columns` of a persisted population (text compared by code)."""

    def __init__(self, pop: PersistedPopulation) -> None:
        self._pop = pop

    def __len__(self) -> int:
        return len(self._pop)

    def isin(self, column: str, values: Sequence[str]) -> np.ndarray:
        return self._pop._isin(column, values)

    def numbers(self, column: str) -> np.ndarray:
        return np.asarray(self._pop.values(column), dtype=float)


class PersistedPopulation:
    """A population file opened read-only and memory-mapped (see the module docstring).

    Parameters
    ----------
    path
        The ``.arrow`` file.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._source = pa.memory_map(str(self.path), "r")
        reader = pa.ipc.open_file(self._source)
        self.table = reader.read_all()
        raw = (self.table.schema.metadata or {}).get(META_KEY)
        if raw is None:
            raise ContractError(f"{self.path} is not a retentio population file (no metadata)")
        self.meta: dict[str, Any] = json.loads(raw)
        self.versions: dict[str, str] = dict(self.meta["model_versions"])
        self.feature_date = pd.Timestamp(self.meta["feature_date"])
        self.thresholds: dict[str, float] = dict(self.meta["thresholds"])
        self.score_columns: list[str] = [  # the score columns, in the order written
            c for c in self.table.column_names if not c.startswith("_") and c != "reasons"
        ]
        self._keys = self._numpy("_key")
        self.rank = self._numpy("_rank")
        self._ids = _array(self.table.column(ENTITY))
        self._reasons = self.table.column("reasons")
        self._columns: dict[str, tuple[np.ndarray, list[Any] | None]] = {}
        for col in self.score_columns:
            if col == ENTITY:
                continue
            array = _array(self.table.column(col))
            if pa.types.is_dictionary(array.type):
                self._columns[col] = (_view(array.indices), array.dictionary.to_pylist())
            elif col in _DATES:
                self._columns[col] = (_view(array).view("datetime64[ns]"), None)
            else:
                self._columns[col] = (_view(array), None)
        self.x: np.ndarray | None = None
        if "_x" in self.table.column_names:
            col = _array(self.table.column("_x"))
            width = col.type.list_size
            self.x = _view(col.flatten()).reshape(-1, width)
        self.candidates: np.ndarray | None = None  # every row's reason candidates, once kept
        self.refresh_candidates()

    def refresh_candidates(self) -> np.ndarray | None:
        """Map the kept reason candidates of this file when they exist (see
        :func:`write_candidates`); the array, or None while there are none."""
        if self.candidates is None:
            self.candidates = read_candidates(self)
        return self.candidates

    def _numpy(self, name: str) -> np.ndarray:
        return _view(_array(self.table.column(name)))

    def __len__(self) -> int:
        return self.table.num_rows

    def positions(self, customer_ids: Sequence[str]) -> np.ndarray:
        """Row position of each id (-1 when the id is not in the population)."""
        ids = [str(c) for c in customer_ids]
        if not ids or not len(self._keys):
            return np.full(len(ids), -1, dtype=np.int64)
        keys = id_keys(ids)
        pos = np.searchsorted(self._keys, keys)
        out = np.full(len(ids), -1, dtype=np.int64)
        n = len(self._keys)
        first = np.minimum(pos, n - 1)
        where = np.flatnonzero((pos < n) & (self._keys[first] == keys))
        if not len(where):
            return out
        # the first row of each key: its id compared with the one asked, all at once
        found = np.asarray(self._ids.take(pa.array(first[where])).to_pylist(), dtype=object)
        same = found == np.asarray([ids[i] for i in where], dtype=object)
        out[where[same]] = first[where[same]]
        for i in where[~same]:  # equal keys of other ids (a collision): the next rows
            p = int(pos[i]) + 1
            while p < n and self._keys[p] == keys[i]:
                if self._ids[p].as_py() == ids[i]:
                    out[i] = p
                    break
                p += 1
        return out

    def rows(self, positions: np.ndarray) -> list[dict[str, Any]]:
        """Score rows (``SCORE_COLUMNS``) at ``positions``: floats, ``numpy.datetime64`` dates
        (NaT when none), text or None."""
        positions = np.asarray(positions, dtype=np.int64)
        if len(positions) == 1:
            ids = [self._ids[int(positions[0])].as_py()]
        else:
            ids = self._ids.take(pa.array(positions)).to_pylist()
        columns: dict[str, list[Any]] = {ENTITY: ids}
        for col, (values, labels) in self._columns.items():
            picked = values[positions]
            if labels is not None:
                columns[col] = [labels[i] for i in picked]
            elif picked.dtype.kind == "M":
                columns[col] = list(picked)
            else:
                columns[col] = picked.tolist()
        names = list(columns)
        return [dict(zip(names, row, strict=True)) for row in zip(*columns.values(), strict=True)]

    def frame(self, positions: np.ndarray) -> pd.DataFrame:
        """Score rows at ``positions`` as a frame (``SCORE_COLUMNS``, dates as datetimes)."""
        frame = pd.DataFrame(self.rows(positions), columns=self.score_columns)
        for col in _DATES:
            frame[col] = pd.to_datetime(frame[col])
        return frame

    def stored_reasons(self, positions: np.ndarray) -> list[list[str] | None]:
        """Precomputed reasons at ``positions`` (None where they were not precomputed)."""
        if len(positions) == 1:
            return [self._reasons[int(positions[0])].as_py()]
        return self._reasons.take(pa.array(positions, pa.int64())).to_pylist()

    def column(self, name: str) -> pa.ChunkedArray:
        """One column (zero-copy)."""
        return self.table.column(name)

    def ranked(
        self,
        filters: AtRiskFilters | None = None,
        *,
        exclude: np.ndarray | None = None,
        **fields: Any,
    ) -> np.ndarray:
        """Row positions by value at risk (highest first) that the at-risk filters keep.

        Parameters
        ----------
        filters
            What the list keeps (:func:`serving.atrisk.keep_mask`, the rule of every at-risk
            list); default: ``AtRiskFilters(**fields)`` (medium and high risk unless
            ``min_risk`` says otherwise).
        exclude
            Positions dropped (customers whose live score replaces the stored one).
        **fields
            Fields of :class:`serving.atrisk.AtRiskFilters` (``min_value``, ``segment``,
            ``risk_band``, ``min_risk``, ...) when ``filters`` is not given.
        """
        if filters is None:
            filters = AtRiskFilters(**fields)
        elif fields:
            raise TypeError("give filters or filter fields, not both")
        mask = self.mask(filters)
        if exclude is not None and len(exclude):
            mask[exclude] = False
        return self.rank[mask[self.rank]]

    def top_ranked(
        self, filters: AtRiskFilters, *, n: int, exclude: np.ndarray | None = None
    ) -> tuple[np.ndarray, int]:
        """The first ``n`` positions of :meth:`ranked` and the length of all of it.

        A page of the at-risk list reads the rank only as far as its last row (
        :func:`first_kept`): one mask of the population and a short scan.
        """
        mask = self.mask(filters)
        if exclude is not None and len(exclude):
            mask[exclude] = False
        return first_kept(self.rank, mask, n), int(np.count_nonzero(mask))

    def mask(self, filters: AtRiskFilters) -> np.ndarray:
        """Which rows (file order) the at-risk filters keep (:func:`serving.atrisk.keep_mask`)."""
        return keep_mask(_PopulationColumns(self), filters)

    def values(self, column: str) -> np.ndarray:
        """A numeric score column (zero-copy)."""
        values, labels = self._columns[column]
        if labels is not None:
            raise ContractError(f"{column!r} is a text column")
        return values

    def _isin(self, column: str, wanted: Sequence[str]) -> np.ndarray:
        values, labels = self._columns[column]
        assert labels is not None
        keep = set(wanted)  # a look-up table over the codes: one gather, no sort
        return np.array([label in keep for label in labels], dtype=bool)[values]

    def close(self) -> None:
        """Release the mapping (views taken before stay valid until collected)."""
        self._source.close()
