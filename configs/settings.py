"""Typed settings: one pydantic ``Settings`` with a section per area, loaded from YAML.

``load_settings(path)`` reads ``configs/default.yaml``, deep-merges the user's file on top (so a
user file holds only what it changes), expands ``${VAR}`` / ``${VAR:-default}`` from the
environment, and validates. Any unknown key or bad value raises :class:`ConfigError` naming the
file, the key and the expected type. Secrets (the API key) come from the environment only.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from retentio.errors import ConfigError

DEFAULT_CONFIG = Path(__file__).with_name("default.yaml")
TABLE_NAMES = ("transactions", "customers", "surveys", "interactions")


def has_password(url: str) -> bool:
    """Whether a database URL (``postgresql://user:password@host/db``) carries a password.

    Parameters
    ----------
    url
        Any URI; only ``postgresql``/``postgres`` schemes (any ``+driver``) are looked at.

    Returns
    -------
    bool
        True when the URL has a password part, or a ``password=`` query parameter.
    """
    parsed = urlsplit(url)
    if parsed.scheme.split("+")[0] not in ("postgresql", "postgres"):
        return False
    try:
        password = parsed.password
    except ValueError:
        return False
    query = {k.lower() for k, _ in parse_qsl(parsed.query)}
    return password is not None or "password" in query


def redact_password(value: Any) -> Any:
    """``value`` with the password of a database URL replaced by ``***`` (others unchanged)."""
    if not isinstance(value, str) or not has_password(value):
        return value
    parts = urlsplit(value)
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, hostport = netloc.rpartition("@")
        netloc = userinfo.split(":", 1)[0] + ":***@" + hostport
    query = "&".join(
        f"{k}=***" if k.lower() == "password" else f"{k}={v}" for k, v in parse_qsl(parts.query)
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


_PASSWORD_IN_URL = (
    "carries a password, which would end up in shell history, process lists and logs; remove "
    "it (postgresql://user@host:port/dbname) and set PGPASSWORD or a ~/.pgpass line instead"
)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TableSource(_Section):
    """Where one input table comes from and how its columns map onto the contract.

    ``file`` is read when the source is a folder; ``table`` or ``query`` when it is a database
    (one of the two; default: the table named like the contract table). The same ``columns``
    mapping applies to both, so one config reads a folder export and the database alike.
    """

    file: str | None = Field(
        None, description="File name or glob inside the data folder; default <table>.csv/.parquet"
    )
    table: str | None = Field(
        None, description="Database table (or schema.table); default: the contract table's name"
    )
    query: str | None = Field(
        None, description="Database SQL query whose result is the table (instead of table)"
    )
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="contract column -> source column, or a DuckDB SQL expression over them",
    )
    date_format: str | None = Field(
        None,
        description="strptime format of the table's text dates (e.g. '%d/%m/%Y %H:%M'); default: "
        "ISO 8601, or day/month numbers in the one order the values show",
    )

    @model_validator(mode="after")
    def _table_or_query(self) -> TableSource:
        if self.table is not None and self.query is not None:
            raise ValueError("give table or query, not both")
        return self


class DataConfig(_Section):
    name: str | None = Field(None, description="Dataset name (MLflow experiment); default: folder")
    source: str | None = Field(
        None,
        description="a data folder or postgresql://user@host:port/dbname (the password comes "
        "from PGPASSWORD or ~/.pgpass, never from here); default: paths.data",
    )
    incremental: bool = Field(
        True,
        description="database source: read only events newer than the watermark kept under "
        "paths.artifacts (false: read every table in full each time)",
    )

    @field_validator("source")
    @classmethod
    def _no_password(cls, v: str | None) -> str | None:
        if v is not None and has_password(v):
            raise ValueError(f"the database URL {_PASSWORD_IN_URL}")
        return v

    tables: dict[Literal["transactions", "customers", "surveys", "interactions"], TableSource] = (
        Field(default_factory=dict)
    )
    strict: bool = Field(False, description="Treat fixable problems (duplicates, ...) as fatal")
    csv_delimiter: str | None = Field(None, description="CSV delimiter; default: sniffed")
    csv_encoding: Literal["utf-8", "utf-16", "latin-1"] | None = Field(
        None, description="CSV text encoding; default: UTF-8 (convert other encodings to UTF-8)"
    )
    currency: str = Field(
        "EUR", max_length=8, description="Currency of amounts, shown on reports and exports"
    )

    def table_source(self, name: str) -> TableSource | None:
        """The configured source of table ``name`` (None: the table is read as named)."""
        return next((source for key, source in self.tables.items() if key == name), None)


class RfmNoteConfig(_Section):
    """The weighted RFM note: points per purchase by age, capped F and M, weighted sum."""

    window_months: int = Field(24, gt=0)
    recency_brackets: list[tuple[int, float]] = Field(
        default_factory=lambda: [(3, 20.0), (6, 5.0), (12, 3.0)],
        description="(max age in months, points per purchase), ascending",
    )
    recency_points_else: float = 1.0
    frequency_points_per_purchase: float = 4.0
    frequency_cap: float = 20.0
    monetary_rate: float = 0.10
    monetary_cap: float = 20.0
    weights: tuple[float, float, float] = (5.0, 3.0, 2.0)

    @field_validator("recency_brackets")
    @classmethod
    def _ascending(cls, v: list[tuple[int, float]]) -> list[tuple[int, float]]:
        months = [m for m, _ in v]
        if months != sorted(months) or len(set(months)) != len(months):
            raise ValueError("brackets must have strictly ascending month limits")
        return v


class AbcConfig(_Section):
    """Pareto classes on trailing revenue: A up to ``a_revenue_share`` of cumulative revenue."""

    window_days: int = Field(365, gt=0)
    a_revenue_share: float = Field(0.65, gt=0, lt=1)
    b_revenue_share: float = Field(0.90, gt=0, lt=1)

    @model_validator(mode="after")
    def _ordered(self) -> AbcConfig:
        if self.a_revenue_share >= self.b_revenue_share:
            raise ValueError("a_revenue_share must be below b_revenue_share")
        return self


class LifecycleConfig(_Section):
    new_days: int = Field(90, gt=0, description="first purchase within this many days: new")
    lapsed_overdue_ratio: float = Field(
        2.0, gt=0, description="days since last / usual gap above this: lapsed"
    )
    lost_days: int = Field(365, gt=0, description="no purchase for this many days: lost")
    declining_trend: float = Field(
        -0.33, lt=0, description="90-day revenue trend ((a-b)/(a+b)) below this: declining"
    )


class FeaturesConfig(_Section):
    windows_days: list[int] = Field(default_factory=lambda: [30, 90, 180, 365])
    rfm_note: RfmNoteConfig = Field(default_factory=RfmNoteConfig)
    abc: AbcConfig = Field(default_factory=AbcConfig)
    lifecycle: LifecycleConfig = Field(default_factory=LifecycleConfig)


class LabelsConfig(_Section):
    active_days: int = Field(365, gt=0, description="churn is defined among customers active here")
    churn_horizon_days: int = Field(90, gt=0)
    next_purchase_horizon_days: int = Field(90, gt=0)
    ltv_horizon_days: int = Field(365, gt=0)
    ltv_target: Literal["revenue", "margin"] = "revenue"
    annual_discount_rate: float = Field(0.0, ge=0, lt=1)


class TrainingConfig(_Section):
    step_days: int = Field(30, gt=0, description="days between rolling snapshot cutoffs")
    n_snapshots: int = Field(4, ge=2, description="snapshots stacked (last one validates)")
    embargo: bool = Field(
        True,
        description="newest training cutoff a whole horizon before the evaluation cutoff, so "
        "no training label window overlaps the evaluation window",
    )
    refit: bool = Field(
        False,
        description="after evaluation, refit each served candidate on every snapshot but the "
        "newest and calibrate it on the newest, and register that model (its recorded metrics "
        "are then those of the evaluated fit)",
    )
    protocol: Literal["auto", "time_split", "customer_split", "btyd_only"] = Field(
        "auto",
        description="evaluation protocol per task: auto takes the strongest the history allows "
        "(time_split, then customer_split, then btyd_only); another value forces it",
    )
    n_folds: int = Field(
        5, ge=3, description="customer_split: folds grouped by customer (out-of-fold evaluation)"
    )
    min_repeat_customers: int = Field(
        30,
        gt=0,
        description="customers with a repeat purchase BG/NBD needs; below it training refuses",
    )
    min_ltv_label_days: int = Field(
        90,
        gt=0,
        description="shortest LTV label horizon learned and then extended to labels."
        "ltv_horizon_days (with BG/NBD x Gamma-Gamma) when the history is too short",
    )
    seasonal_level: bool = Field(
        True,
        description="scale the served LTV by the history's calendar revenue index of the "
        "scored window's days one year earlier, relative to the labelled windows its level was "
        "fitted on (1 where the history has not seen those days; see training.seasonal)",
    )
    seasonal_half_window_days: int = Field(
        28, gt=0, description="half-width of the moving mean that detrends the calendar index"
    )
    random_state: int = 42
    n_threads: int = Field(
        2,
        gt=0,
        description="LightGBM training threads for fits of at least 100k rows (smaller fits use "
        "one); fixed so that the same data, config and seed give the same models",
    )
    min_customers: int = Field(200, gt=0)
    min_purchasers: int = Field(50, gt=0)
    lightgbm: dict[str, Any] = Field(
        default_factory=lambda: {
            "n_estimators": 300,
            "learning_rate": 0.05,
            "num_leaves": 31,
            "min_child_samples": 50,
            "subsample": 0.8,
            "subsample_freq": 1,
            "colsample_bytree": 0.8,
            "reg_lambda": 1.0,
            "verbose": -1,
        }
    )


class MlflowConfig(_Section):
    tracking_uri: str = "sqlite:///mlruns/mlflow.db"
    artifact_location: str = "mlruns/artifacts"
    experiment: str | None = Field(None, description="default: retentio-<dataset name>")

    @field_validator("tracking_uri")
    @classmethod
    def _no_password(cls, v: str) -> str:
        if has_password(v):
            raise ValueError(f"the tracking URI {_PASSWORD_IN_URL}")
        return v


class ActionRule(_Section):
    risk_bands: list[Literal["low", "medium", "high"]]
    value: Literal["high", "low", "any"] = "any"
    potential: Literal["high", "low", "any"] = "any"
    action: str


def _default_risk_bands() -> dict[Literal["medium", "high"], float]:
    return {"medium": 0.3, "high": 0.6}


class ActionsConfig(_Section):
    risk_bands: dict[Literal["medium", "high"], float] = Field(
        default_factory=lambda: _default_risk_bands(),
        description="churn probability at or above which a band starts",
    )
    high_value_quantile: float = Field(0.8, gt=0, lt=1)
    high_potential_quantile: float = Field(0.8, gt=0, lt=1)
    strategies: dict[str, str] = Field(
        default_factory=lambda: {
            "high_value_high_potential": "retain",
            "low_value_high_potential": "develop / cross-sell",
            "high_value_low_potential": "maintain at low cost",
            "low_value_low_potential": "let go",
        }
    )
    rules: list[ActionRule] = Field(default_factory=list)
    email_open_rate: float = Field(
        0.2, ge=0, le=1, description="email open rate (last year) at or above which email is first"
    )
    email_click_rate: float = Field(
        0.03,
        ge=0,
        le=1,
        description="email click rate (last year) at or above which email is first",
    )


class ServingConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(3000, gt=0, lt=65536)
    max_batch: int = Field(10_000, gt=0)
    at_risk_page_size: int = Field(100, gt=0)
    reload_interval_s: float = Field(10.0, gt=0)
    clock: Literal["data", "wall"] = Field(
        "data",
        description="scoring date: 'data' = the store's as_of, moved on by events received; "
        "'wall' = today (UTC)",
    )
    api_keys: list[SecretStr] = Field(
        default_factory=list,
        description="accepted API keys besides RETENTIO_API_KEY; write ${VAR} references, "
        "never keys, in a file (masked in every dump of the settings)",
    )
    api_keys_file: str | None = Field(
        None,
        description="file of accepted API keys, one per line (e.g. a mounted secret); re-read "
        "when it changes, so keys rotate without a restart",
    )
    shutdown_grace_s: float = Field(
        15.0, gt=0, description="seconds in-flight requests get to finish on SIGTERM/SIGINT"
    )
    prediction_log_max_bytes: int = Field(50_000_000, gt=0)
    prediction_log_backups: int = Field(5, ge=0)
    event_max_age_days: int = Field(
        730,
        gt=0,
        description="POST /events refuses events dated more than this many days before the "
        "store date (and any dated in the future)",
    )
    workers: int = Field(
        1,
        gt=0,
        le=64,
        description="BentoML worker processes of `retentio serve`; they share the persisted "
        "population (memory-mapped)",
    )
    precomputed_reasons: int = Field(
        1_000,
        ge=0,
        description="top reasons phrased when a population is written, for this many customers "
        "with the largest value at risk (the first ten pages of the at-risk list; ~1 ms of "
        "TreeSHAP each, on the batch job's path); the others' reasons are computed when a "
        "request returns them, or read from the candidates `background_reasons` keeps",
    )
    background_reasons: bool = Field(
        True,
        description="once a population is served, one worker computes every customer's reason "
        "candidates (TreeSHAP) in a low-priority thread and keeps them beside the population "
        "file, so requests (and later starts) compute no TreeSHAP",
    )


class DriftPolicy(_Section):
    max_drift_share: float = Field(0.3, gt=0, le=1)
    key_features: list[str] = Field(
        default_factory=lambda: [
            "recency_days",
            "monetary_value",
            "n_orders_30d",
            "revenue_30d",
            "n_orders_365d",
            "revenue_365d",
        ]
    )
    short_window_min_active: int = Field(
        1500,
        ge=0,
        description="key features over windows shorter than a year (n_orders_30d, ...) decide "
        "only against the same season a year earlier and when both snapshots hold at least "
        "this many active customers",
    )
    max_auc_drop: float = Field(0.05, ge=0)
    max_model_age_days: int = Field(
        90,
        gt=0,
        description="retrain when the champion has not learned from more than this many days of "
        "newer labelled data (data time, not days since training)",
    )
    prediction_drift: bool = Field(
        False, description="retrain when the champion's churn probability or predicted LTV drifts"
    )


class MonitoringConfig(_Section):
    policy: DriftPolicy = Field(default_factory=DriftPolicy)
    drift_threshold: float = Field(
        0.1,
        gt=0,
        description="per-column drift score threshold: a numerical column drifts when its "
        "values moved by this many standard deviations (normed Wasserstein)",
    )
    noise_multiple: float = Field(
        2.0,
        gt=0,
        description="a column also needs this multiple of the score sampling noise alone gives it",
    )
    reference: Literal["same_season", "champion"] = Field(
        "same_season",
        description="same_season: compare with the same day a year earlier on equal history "
        "(the champion's snapshot when the history is too short); champion: always the "
        "champion's evaluation snapshot",
    )


class PathsConfig(_Section):
    artifacts: str = "artifacts"
    data: str = "data/synthetic"


class SynthConfig(_Section):
    n_customers: int = Field(5_000, gt=0)
    start: str = Field("2023-01-01", pattern=r"^\d{4}-\d{2}-\d{2}$", description="YYYY-MM-DD")
    end: str = Field("2025-06-30", pattern=r"^\d{4}-\d{2}-\d{2}$", description="YYYY-MM-DD")
    seed: int = 7


class EngineConfig(_Section):
    """Where the data jobs run: this process, or a Dask cluster over a partitioned dataset."""

    kind: Literal["local", "dask"] = Field(
        "local", description="local: one process; dask: partition by partition on a cluster"
    )
    scheduler: str | None = Field(
        None, description="Dask scheduler address (tcp://host:8786); none: a LocalCluster"
    )
    workers: int | None = Field(None, gt=0, description="LocalCluster workers; default: cores")
    worker_memory: str = Field("auto", description="LocalCluster memory limit per worker")
    train_sample_rows: int = Field(
        500_000,
        gt=0,
        description=(
            "training on dask: customers per snapshot brought to the learners (a seeded sample; "
            "every customer below this size, so both engines fit the same models)"
        ),
    )
    train_rows: Literal["sample", "all"] = Field(
        "sample",
        description=(
            "training on dask: 'all' fits the churn LightGBM model with lightgbm.dask on every "
            "active customer of the training snapshots, on the workers (as many trees as early "
            "stopping chose on the sample); 'sample' fits it on the sample, in this process"
        ),
    )


class Settings(_Section):
    """All of retentio's configuration, one section per area."""

    data: DataConfig = Field(default_factory=DataConfig)
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    labels: LabelsConfig = Field(default_factory=LabelsConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)
    actions: ActionsConfig = Field(default_factory=ActionsConfig)
    serving: ServingConfig = Field(default_factory=ServingConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)
    paths: PathsConfig = Field(default_factory=PathsConfig)
    synth: SynthConfig = Field(default_factory=SynthConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand(value: Any, source: Path) -> Any:
    if isinstance(value, str):

        def repl(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            raise ConfigError(
                f"{source}: environment variable {name} is not set; "
                f"export it or write ${{{name}:-default}}"
            )

        return _ENV.sub(repl, value)
    if isinstance(value, dict):
        return {k: _expand(v, source) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, source) for v in value]
    return value


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} does not exist; pass --config with a real path"
        ) from None
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {raw!r:.60}")
    return _expand(raw, path)


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Load the defaults, merge the file at ``path`` on top, then ``overrides`` (section dicts).

    Parameters
    ----------
    path
        A YAML file holding only the keys to change; ``None`` means the defaults alone.
    **overrides
        Section name -> dict of values, merged last (used by CLI flags and tests).

    Returns
    -------
    Settings
        The validated, frozen settings.

    Raises
    ------
    ConfigError
        The file is missing or not YAML, a key is unknown, or a value has the wrong type;
        the message names the file, the dotted key and what was expected.
    """
    raw = _read_yaml(DEFAULT_CONFIG)
    source = DEFAULT_CONFIG
    if path is not None:
        source = Path(path)
        raw = _merge(raw, _read_yaml(source))
    if overrides:
        raw = _merge(raw, overrides)
    return _validate(raw, source)


def _validate(
    raw: dict[str, Any], source: Path | str, options: Mapping[str, str] | None = None
) -> Settings:
    """Validate ``raw``; a bad value raises ConfigError naming its key (or CLI option)."""
    options = options or {}
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            got = redact_password(err.get("input"))
            if key.startswith("serving.api_keys"):
                got = "<redacted>"
            option = next(
                (o for k, o in options.items() if key == k or key.startswith(k + ".")), None
            )
            if err["type"] == "extra_forbidden":
                lines.append(f"unknown key '{key}' (remove it or check its spelling)")
            elif option is not None:
                lines.append(f"{option} ({key}): {err['msg']} (got {got!r:.60})")
            else:
                lines.append(f"'{key}': {err['msg']} (got {got!r:.60})")
        raise ConfigError(f"{source}: invalid configuration\n  " + "\n  ".join(lines)) from None


def with_options(settings: Settings, options: Mapping[str, tuple[str, Any]]) -> Settings:
    """``settings`` with command-line options applied, validated like a config file.

    Parameters
    ----------
    settings
        The loaded settings.
    options
        Dotted settings key (``labels.churn_horizon_days``) -> (option name as the user typed
        it, value). ``None`` values mean "not given" and change nothing; any other value,
        including 0 or an empty string, is applied and validated.

    Returns
    -------
    Settings
        New validated settings (``settings`` itself when no option was given).

    Raises
    ------
    ConfigError
        A value is invalid; the message names the option, the key and what is expected.
    """
    given = {key: value for key, (_, value) in options.items() if value is not None}
    if not given:
        return settings
    raw = settings.model_dump()
    for key, value in given.items():
        *sections, leaf = key.split(".")
        node = raw
        for section in sections:
            node = node[section]
        node[leaf] = value
    names = {key: name for key, (name, value) in options.items() if value is not None}
    return _validate(raw, "command line", names)
