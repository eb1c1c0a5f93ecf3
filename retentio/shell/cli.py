"""The retentio command line: one Typer app, area verbs, each taking ``--config``.

Library code never prints; this shell configures logging once, turns ``RetentioError`` into a
one-line message with the right exit code, and drives rich progress bars on long work.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from retentio.errors import RetentioError

if TYPE_CHECKING:  # keeps `retentio --help` free of heavy imports
    from retentio.configs.settings import Settings

app = typer.Typer(
    help="retentio: churn risk, next purchase and lifetime value for every CRM customer.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Synthesise and check input data.", no_args_is_help=True)
features_app = typer.Typer(help="Build point-in-time features.", no_args_is_help=True)
models_app = typer.Typer(help="Manage registered models (promotion).", no_args_is_help=True)
runs_app = typer.Typer(help="Compare training runs tracked in MLflow.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(features_app, name="features")
app.add_typer(models_app, name="models")
app.add_typer(runs_app, name="runs")

console = Console(stderr=True)
out = Console()
logger = logging.getLogger("retentio")

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML file with the settings to change (see configs/)."),
]
DataOpt = Annotated[
    str | None,
    typer.Option(
        "--data",
        "-d",
        help="Folder of CSV/Parquet tables, or postgresql://user@host:port/dbname (password "
        "from PGPASSWORD or ~/.pgpass). Default: data.source, then paths.data.",
    ),
]
CutoffOpt = Annotated[
    str | None,
    typer.Option(help="Cutoff date YYYY-MM-DD (default: the last event date in the data)."),
]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")]
EngineOpt = Annotated[
    str | None,
    typer.Option(
        help="local or dask (default: engine.kind). dask: --data is a partitioned dataset "
        "(`retentio data partition`)."
    ),
]
SchedulerOpt = Annotated[
    str | None,
    typer.Option(help="Dask scheduler address tcp://host:8786 (default: a LocalCluster)."),
]


def _engine_options(engine: str | None, scheduler: str | None) -> dict[str, tuple[str, Any]]:
    return {"engine.kind": ("--engine", engine), "engine.scheduler": ("--scheduler", scheduler)}


def _dataset_path(settings: Settings, data: str | None) -> Path:
    """The partitioned dataset the Dask engine reads (``--data`` or ``paths.data``)."""
    return Path(data if data is not None else settings.paths.data)


T = TypeVar("T")


def _on_dask(
    job: Callable[..., T],
    settings: Settings,
    data: str | None,
    steps: int | None,
    label: str,
    **kwargs: Any,
) -> T:
    """``job(settings, dataset, progress=..., **kwargs)`` of ``retentio.shell.dask_jobs`` under
    a progress bar, user errors reported as for the local engine."""
    with progress_steps(steps, f"{label} (dask)") as step:
        return _run(lambda: job(settings, _dataset_path(settings, data), progress=step, **kwargs))


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        datefmt="[%X]",
        handlers=[RichHandler(console=console, show_path=False, rich_tracebacks=False)],
        force=True,
    )
    for noisy in ("mlflow", "alembic", "urllib3", "bentoml", "evidently", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Dask sets its loggers' levels from its config when it is imported (in this process and in
    # every worker it starts): warnings only, unless the user's environment says otherwise
    if not verbose:
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
        if "distributed" in sys.modules:  # imported already: its levels are set
            logging.getLogger("distributed").setLevel(logging.WARNING)


def _run(fn: Callable[[], T]) -> T:
    """Call ``fn``; a ``RetentioError`` becomes a clear message and its exit code."""
    try:
        return fn()
    except RetentioError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None


def _settings(config: Path | None, options: dict[str, tuple[str, Any]] | None = None) -> Settings:
    """Load the settings, then apply the command's options on top, validated like the file.

    ``options`` maps a dotted settings key to (option name, value); ``None`` means not given.
    Every option that sets a setting goes through here, so a bad value (``--horizon 0``,
    ``--customers 0``) is a config error naming the option (exit 2), never a default. Without
    ``--config`` the project file's config is used (``retentio init``), and its data folder is
    ``paths.data``: the registry namespace (``data.name``, else that folder's name) is then
    the same for every command of the project (``--data`` reads another folder, e.g. a
    partitioned copy, without changing it).
    """
    from retentio.configs.project import read_project
    from retentio.configs.settings import load_settings, with_options

    project = _run(read_project)
    overrides: dict[str, Any] = {}
    if project is not None:
        config = config if config is not None else project.config
        overrides["paths"] = {"data": str(project.data)}
    return _run(lambda: with_options(load_settings(config, **overrides), options or {}))


SCORE_STEPS = 7
"""Steps of a scoring job: champions, features, BTYD features, three tasks, actions."""


@contextmanager
def progress_steps(total: int | None, label: str) -> Iterator[Callable[[str], None]]:
    """A rich progress bar advanced by calling the yielded function with a step name.

    ``total=None`` (a job whose number of steps depends on the data) shows a pulsing bar.
    """
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed} steps"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task(label, total=total)

        def step(name: str) -> None:
            progress.update(task, advance=1, description=f"{label}: {name}")

        yield step
        progress.update(task, total=progress.tasks[0].completed, description=f"{label}: done")


def _data_dir(settings: Settings, data: str | None) -> str:
    """The data source: ``--data``, else ``data.source``, else ``paths.data``."""
    return data or settings.data.source or settings.paths.data


def _read(settings: Settings, source: str) -> Any:
    """Tables and report from a folder or a database (incremental; the mirror in artifacts)."""
    from retentio.features.database import load_source_tables

    return _run(
        lambda: load_source_tables(source, settings.data, artifacts=Path(settings.paths.artifacts))
    )


def _load(settings: Settings, data: str | None) -> Any:
    """Load and validate the data folder or database; print fixes; stop (exit 2) on fatal
    problems."""
    from retentio.features.privacy import drop_erased

    tables, report = _read(settings, _data_dir(settings, data))
    for line in report.summary_lines():
        logger.info(line)
    _run(report.raise_if_fatal)
    tables, _ = drop_erased(tables, Path(settings.paths.artifacts))  # warns when any is found
    return tables


def _cutoff(tables: Any, cutoff: str | None) -> Any:
    from retentio.features.cutoff import as_cutoff

    return _run(lambda: as_cutoff(cutoff if cutoff is not None else tables.last_timestamp))


# ---------------------------------------------------------------------------------------------
# project
# ---------------------------------------------------------------------------------------------


@app.command("init")
def init(
    data: Annotated[Path, typer.Option("--data", "-d", help="Folder of CSV/Parquet tables.")],
    config: ConfigOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Remember the data folder and config: later commands here need neither flag."""
    _setup_logging(verbose)
    from retentio.configs.project import write_project
    from retentio.configs.settings import load_settings
    from retentio.training.registry import registered_model_name

    settings = _run(lambda: load_settings(config, paths={"data": str(data)}))
    project = _run(lambda: write_project(data, config, Path.cwd()))
    name = settings.data.name or project.data.name
    out.print(f"project file {project.path}", highlight=False)
    out.print(f"  data:   {project.data}", highlight=False)
    out.print(f"  config: {project.config or '(defaults)'}", highlight=False)
    out.print(
        f"  dataset {name}: registered models {registered_model_name('churn', settings)}, ...",
        highlight=False,
    )
    out.print("next: retentio train (no --data/--config needed in this folder)")


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------


@data_app.command("synth")
def data_synth(
    out_dir: Annotated[Path | None, typer.Option("--out", help="Output folder.")] = None,
    customers: Annotated[int | None, typer.Option(help="Number of customers.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (same seed, same files).")] = None,
    start: Annotated[str | None, typer.Option(help="First date YYYY-MM-DD.")] = None,
    end: Annotated[str | None, typer.Option(help="Last date YYYY-MM-DD.")] = None,
    drift: Annotated[
        str | None, typer.Option(help="Date after which behaviour shifts (for drift demos).")
    ] = None,
    cohort_days: Annotated[
        int | None,
        typer.Option(help="Closed cohort: every customer is acquired in the first N days."),
    ] = None,
    drift_spend: Annotated[
        float, typer.Option(help="With --drift: order values x this (1 = unchanged).")
    ] = 1.5,
    drift_rate: Annotated[
        float, typer.Option(help="With --drift: purchase rates x this (1 = unchanged).")
    ] = 0.8,
    drift_channel_share: Annotated[
        float,
        typer.Option(help="With --drift: share of new customers from a new channel (0 = none)."),
    ] = 0.3,
    fmt: Annotated[str, typer.Option("--format", help="csv or parquet.")] = "csv",
    partitions: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Write a dataset partitioned by customer for the Dask engine, generated chunk "
            "by chunk (any size fits in memory).",
        ),
    ] = None,
    config: ConfigOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Generate a realistic synthetic CRM (transactions, customers, surveys, interactions)."""
    _setup_logging(verbose)
    settings = _settings(
        config,
        {
            "synth.n_customers": ("--customers", customers),
            "synth.seed": ("--seed", seed),
            "synth.start": ("--start", start),
            "synth.end": ("--end", end),
        },
    )
    from retentio.features.synth import Drift, generate_crm, write_tables

    if fmt not in ("csv", "parquet"):
        console.print(f"[bold red]error:[/] --format must be csv or parquet, got {fmt!r}")
        raise typer.Exit(2)
    folder = out_dir if out_dir is not None else Path(settings.paths.data)
    drift_sizes = Drift(spend=drift_spend, rate=drift_rate, new_channel_share=drift_channel_share)
    if partitions is not None:
        from retentio.features.partition import synth_partitioned

        syn = settings.synth
        with progress_steps(-(-syn.n_customers // 250_000), "synthetic CRM, partitioned") as step:
            dataset = _run(
                lambda: synth_partitioned(
                    folder, n_customers=syn.n_customers, n_partitions=partitions,
                    start=syn.start, end=syn.end, seed=syn.seed, drift_date=drift,
                    drift=drift_sizes, cohort_days=cohort_days, progress=step,
                )
            )  # fmt: skip
        for name, n in dataset.tables.items():
            out.print(f"{name:<13} {n:>12,} rows  -> {folder}/part-*/{name}/")
        return
    with console.status("generating synthetic CRM data"):
        tables = _run(
            lambda: generate_crm(
                n_customers=settings.synth.n_customers,
                start=settings.synth.start,
                end=settings.synth.end,
                seed=settings.synth.seed,
                drift_date=drift,
                cohort_days=cohort_days,
                drift=drift_sizes,
            )
        )
        paths = write_tables(tables, folder, fmt=fmt)  # type: ignore[arg-type]
    for name, path in paths.items():
        frame = getattr(tables, name)
        out.print(f"{name:<13} {len(frame):>12,} rows  -> {path}")


@data_app.command("partition")
def data_partition(
    out_dir: Annotated[Path, typer.Option("--out", help="The partitioned dataset to write.")],
    partitions: Annotated[int, typer.Option(min=1, help="Number of partitions.")] = 16,
    data: DataOpt = None,
    config: ConfigOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Split a data folder by customer into a partitioned dataset for the Dask engine."""
    _setup_logging(verbose)
    settings = _settings(config)
    from retentio.features.partition import partition_dataset

    folder = Path(_data_dir(settings, data))
    with console.status(f"partitioning {folder} into {partitions} partitions"):
        dataset = _run(
            lambda: partition_dataset(folder, settings.data, out_dir, n_partitions=partitions)
        )
    for name, n in dataset.tables.items():
        out.print(f"{name:<13} {n:>12,} rows  -> {out_dir}/part-*/{name}/")
    out.print(f"[green]ok[/]: {dataset.n_partitions} partitions by customer -> {out_dir}")


@data_app.command("check")
def data_check(data: DataOpt = None, config: ConfigOpt = None, verbose: VerboseOpt = False) -> None:
    """Validate a data folder against the contract; exit 2 on fatal problems."""
    _setup_logging(verbose)
    settings = _settings(config)
    folder = _data_dir(settings, data)
    tables, report = _read(settings, folder)
    for line in report.summary_lines():
        out.print(line, highlight=False)
    if report.fatal:
        console.print(f"[bold red]{len(report.fatal)} fatal problem(s)[/] in {folder}")
        raise typer.Exit(2)
    rows = ", ".join(f"{name} {len(frame):,}" for name, frame in tables.items())
    out.print(f"[green]ok[/]: {folder} ({rows} rows after cleaning)")


@data_app.command("erase")
def data_erase(
    customer: Annotated[
        list[str],
        typer.Option("--customer", help="A customer id to erase (repeat for several)."),
    ],
    config: ConfigOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Erase customers from the stores, scores and prediction log; record it (hashed ids).

    A later load of source data that still holds them leaves them out, with a warning.
    """
    _setup_logging(verbose)
    settings = _settings(config)
    from retentio.shell.erase import erase_customers

    result = _run(lambda: erase_customers(settings, customer))
    for place, n in sorted(result.removed.items()):
        out.print(f"{place:<48} {n:>8,} removed")
    if not result.removed:
        out.print("nothing held about these customers under the artifacts folder")
    out.print(
        f"{result.n_customers} customer(s) erased; recorded (as keyed hashes) in {result.record}. "
        "A running service drops them at its next reload (serving.reload_interval_s). Delete "
        "them from the source data too: later loads that still hold them leave them out and warn."
    )


# ---------------------------------------------------------------------------------------------
# features
# ---------------------------------------------------------------------------------------------


@features_app.command("build")
def features_build(
    data: DataOpt = None,
    cutoff: CutoffOpt = None,
    out_file: Annotated[
        Path | None,
        typer.Option("--out", help="Parquet file (default: the offline store under artifacts)."),
    ] = None,
    online: Annotated[
        bool, typer.Option(help="Also replace the online store (SQLite) with these rows.")
    ] = True,
    engine: EngineOpt = None,
    scheduler: SchedulerOpt = None,
    config: ConfigOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Build one row of point-in-time features per customer known at the cutoff."""
    _setup_logging(verbose)
    settings = _settings(config, _engine_options(engine, scheduler))
    if settings.engine.kind == "dask":
        from retentio.shell.dask_jobs import features_dask

        result = _on_dask(features_dask, settings, data, 3, "features", cutoff=cutoff, out=out_file)
        out.print(
            f"features at {result.cutoff.date()}: {result.n_customers:,} customers in "
            f"{len(result.files)} files -> {result.path}"
        )
        return
    from retentio.features.build import feature_summary
    from retentio.features.store import build_feature_store

    with progress_steps(2, "features") as step:
        tables = _load(settings, data)
        step("loaded")
        t = _cutoff(tables, cutoff)
        frame, path = _run(
            lambda: build_feature_store(
                tables, t, settings.features, Path(settings.paths.artifacts), online=online
            )
        )
        step("built, offline + online stores written")
        if out_file is not None:
            out_file.parent.mkdir(parents=True, exist_ok=True)
            frame.to_parquet(out_file, index=False)
            path = out_file
    _print_summary(feature_summary(frame))
    out.print(f"features: {len(frame):,} customers x {frame.shape[1]} columns -> {path}")


def _print_summary(summary: dict[str, Any]) -> None:
    table = Table(title="feature summary", show_header=True)
    table.add_column("what")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        if isinstance(value, dict):
            value = ", ".join(
                f"{k}: {v:,}" if isinstance(v, int) else f"{k}: {v}" for k, v in value.items()
            )
        elif isinstance(value, float):
            value = f"{value:,.2f}"
        table.add_row(str(key), str(value))
    out.print(table)


TASK_CHOICES = ("all", "churn", "next-purchase", "ltv")


def _tasks(task: str) -> tuple[str, ...]:
    if task not in TASK_CHOICES:
        console.print(f"[bold red]error:[/] --task must be one of {', '.join(TASK_CHOICES)}")
        raise typer.Exit(2)
    return ("churn", "next-purchase", "ltv") if task == "all" else (task,)


KEY_METRICS = {
    "churn": ("auc", "pr_auc", "brier", "log_loss", "ece", "lift_at_10"),
    "next-purchase": ("brier_30d", "brier_60d", "brier_90d", "interval_coverage_80"),
    "ltv": ("gini", "spearman", "top_decile_capture", "bias_pct", "mae"),
}


def _metrics_tables(result: Any) -> list[Table]:
    """Key holdout metrics, one table per task (every metric is in MLflow and the report)."""
    tables = []
    for task, cands in result.metrics.items():
        if not cands:
            continue
        names = [n for n in KEY_METRICS.get(task, ()) if any(n in v for v in cands.values())]
        plan = result.plans[task]
        where = (
            f"holdout snapshot {plan.cutoffs[-1].date()}"
            if plan.protocol == "time_split"
            else f"out of fold over {len(plan.cutoffs)} labelled snapshot(s)"
        )
        if plan.extended:
            where += f", {plan.learned_horizon_days}-day labels"
        table = Table(title=f"{task} ({plan.protocol}): {where}")
        table.add_column("candidate")
        for name in names:
            table.add_column(name.replace("_", " "), justify="right")
        for cand, values in cands.items():
            star = " (served)" if result.served.get(task) == cand else ""
            table.add_row(cand + star, *[f"{values.get(n, float('nan')):.3f}" for n in names])
        tables.append(table)
    return tables


# ---------------------------------------------------------------------------------------------
# training and models
# ---------------------------------------------------------------------------------------------


@app.command("train")
def train(
    data: DataOpt = None,
    task: Annotated[str, typer.Option(help="all, churn, next-purchase or ltv.")] = "all",
    cutoff: CutoffOpt = None,
    horizon: Annotated[
        int | None, typer.Option(help="Churn and next-purchase horizon in days.")
    ] = None,
    ltv_horizon: Annotated[int | None, typer.Option(help="LTV horizon in days.")] = None,
    promote_now: Annotated[
        bool, typer.Option("--promote", help="Run the promotion gate right after training.")
    ] = False,
    engine: EngineOpt = None,
    scheduler: SchedulerOpt = None,
    config: ConfigOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Train churn, next-purchase and LTV models beside their baselines; register @candidate."""
    _setup_logging(verbose)
    settings = _settings(
        config,
        {
            "labels.churn_horizon_days": ("--horizon", horizon),
            "labels.next_purchase_horizon_days": ("--horizon", horizon),
            "labels.ltv_horizon_days": ("--ltv-horizon", ltv_horizon),
            **_engine_options(engine, scheduler),
        },
    )
    tasks = _tasks(task)
    from retentio.shell.jobs import promote_job, train_job

    tables: Any = None
    if settings.engine.kind == "dask":
        from retentio.shell.dask_jobs import train_dask_job

        job = _on_dask(
            train_dask_job, settings, data, None, "train", tasks=tasks, cutoff=cutoff,
            promote=promote_now,
        )  # fmt: skip
    else:
        tables = _load(settings, data)
        with progress_steps(None, "train") as step:
            job = _run(
                lambda: train_job(tables, settings, tasks=tasks, cutoff=cutoff, progress=step)
            )
    for plan in job.result.plans.values():
        out.print(f"protocol {plan.describe()}", highlight=False)
    if job.result.sample:
        day = max(job.result.sample)
        n, total = job.result.sample[day]
        out.print(f"snapshots sampled on the Dask cluster: {n:,} of {total:,} customers ({day})")
    for table in _metrics_tables(job.result):
        out.print(table)
    for t, boot in job.result.bootstrap.items():
        if boot:
            out.print(
                f"{t}: {boot['a_name']} - {boot['b_name']} on {boot['metric']}: "
                f"{boot['diff']:+.4f} (95% CI {boot['lo']:+.4f} .. {boot['hi']:+.4f})"
            )
    ltv = job.result.metrics.get("ltv", {}).get(job.result.served.get("ltv", ""), {})
    if "bias_pct_lo" in ltv:
        out.print(
            f"ltv: aggregate bias of {job.result.served['ltv']} {ltv['bias_pct']:+.1f} % "
            f"(95% CI {ltv['bias_pct_lo']:+.1f} .. {ltv['bias_pct_hi']:+.1f})"
        )
    out.print(f"report: {job.report_path}")
    out.print(f"MLflow run {job.run_id}; @candidate versions: {job.versions}")
    if promote_now:
        # the Dask engine's job ran the gate on its cluster (the champion re-scored there)
        decisions = job.decisions or _run(lambda: promote_job(tasks, settings, tables=tables))
        for d in decisions:
            verdict = "promoted" if d.promoted else "kept champion"
            out.print(f"{d.task}: {verdict} ({d.reason})", markup=False)
    else:
        out.print("next: retentio models promote all")


@models_app.command("promote")
def models_promote(
    task: Annotated[str, typer.Argument(help="all, churn, next-purchase or ltv.")] = "all",
    data: DataOpt = None,
    force: Annotated[
        bool, typer.Option(help="Promote even if the candidate is worse (logged).")
    ] = False,
    config: ConfigOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Move @champion to @candidate only if the candidate is at least as good on the same data."""
    _setup_logging(verbose)
    settings = _settings(config)
    tasks = _tasks(task)
    from retentio.features.database import is_database_url
    from retentio.shell.jobs import promote_job

    folder = _data_dir(settings, data)
    tables = _load(settings, data) if is_database_url(folder) or Path(folder).exists() else None
    failed = False
    for d in _run(lambda: promote_job(tasks, settings, tables=tables, force=force)):
        verdict = "promoted" if d.promoted else "kept champion"
        out.print(f"{d.task}: {verdict} - {d.reason}", markup=False)
        failed |= not d.promoted
    if failed and not force:
        raise typer.Exit(1)


@runs_app.command("compare")
def runs_compare(
    experiment: Annotated[str | None, typer.Option(help="MLflow experiment name.")] = None,
    all_metrics: Annotated[
        bool, typer.Option("--all", help="Every metric, not only key ones.")
    ] = False,
    config: ConfigOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Print a table of training runs and their metrics, newest first."""
    _setup_logging(verbose)
    settings = _settings(config)
    from retentio.training.tracking import compare_runs

    frame = _run(lambda: compare_runs(settings, experiment, key_only=not all_metrics))
    if frame.empty:
        out.print("no runs yet: run `retentio train`")
        return
    shown = frame.head(4)  # newest runs as columns, metrics as rows: readable in a terminal
    table = Table(title=f"{len(frame)} run(s), newest first (showing {len(shown)})")
    table.add_column("", no_wrap=True)
    for run_id in shown["run_id"]:
        table.add_column(str(run_id)[:8], justify="right")
    for col in shown.columns.drop("run_id"):
        values = shown[col].tolist()
        if all(v is None or v != v for v in values):
            continue
        table.add_row(
            str(col),
            *[
                "" if v is None or v != v else f"{v:.4g}" if isinstance(v, float) else str(v)[:19]
                for v in values
            ],
        )
    out.print(table)


# ---------------------------------------------------------------------------------------------
# scoring
# ---------------------------------------------------------------------------------------------


@app.command("score")
def score(
    data: DataOpt = None,
    cutoff: CutoffOpt = None,
    out_file: Annotated[
        Path | None,
        typer.Option("--out", help="CSV or Parquet file (default: <paths.artifacts>/scores.csv)."),
    ] = None,
    engine: EngineOpt = None,
    scheduler: SchedulerOpt = None,
    config: ConfigOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Batch-score every customer with the champions (churn, next purchase, LTV, action)."""
    _setup_logging(verbose)
    settings = _settings(config, _engine_options(engine, scheduler))
    if settings.engine.kind == "dask":
        from retentio.shell.dask_jobs import score_dask

        scored = _on_dask(score_dask, settings, data, 6, "scoring", cutoff=cutoff, out=out_file)
        out.print(
            f"{scored.n_customers:,} customers scored with versions {scored.versions} -> "
            f"{scored.path} (Parquet dataset)"
        )
        return
    from retentio.shell.scoring_jobs import score_job

    tables = _load(settings, data)
    t = _cutoff(tables, cutoff)
    source = _data_source(settings, data, tables)
    with progress_steps(SCORE_STEPS + 2, f"scoring as of {t.date()}") as step:
        job = _run(lambda: score_job(tables, settings, cutoff=t, source=source, progress=step))
    if out_file is None:
        out_file = Path(settings.paths.artifacts) / "scores.csv"
    _write_frame(job.scores, out_file)
    out.print(
        f"{len(job.scores):,} customers scored with versions {job.versions} -> {out_file}\n"
        f"persisted population (read by at-risk and the service): {job.population}"
    )


def _data_source(settings: Settings, data: str | None, tables: Any) -> dict[str, Any]:
    """What identifies the data a population is scored from: folder fingerprint, last day."""
    from retentio.shell.persisted import data_fingerprint

    return {
        "data_fingerprint": data_fingerprint(_data_dir(settings, data)),
        "data_end": _cutoff(tables, None).date().isoformat(),
    }


@app.command("at-risk")
def at_risk(
    data: DataOpt = None,
    top: Annotated[int, typer.Option(min=1, help="How many customers.")] = 100,
    min_value: Annotated[
        float | None, typer.Option(help="Only customers worth at least this if retained.")
    ] = None,
    min_risk: Annotated[
        str, typer.Option(help="Lowest risk band kept: low (all), medium (default) or high.")
    ] = "medium",
    risk_band: Annotated[str | None, typer.Option(help="Only this risk band.")] = None,
    segment: Annotated[
        str | None,
        typer.Option(help="Only this RFM segment, ABC class, lifecycle stage or quadrant."),
    ] = None,
    rfm_segment: Annotated[str | None, typer.Option(help="Only this RFM segment.")] = None,
    abc_class: Annotated[str | None, typer.Option(help="Only this ABC class (A, B, C).")] = None,
    lifecycle_stage: Annotated[str | None, typer.Option(help="Only this lifecycle stage.")] = None,
    value_potential: Annotated[
        str | None, typer.Option(help="Only this value x potential quadrant.")
    ] = None,
    action: Annotated[str | None, typer.Option(help="Only this recommended action.")] = None,
    cutoff: CutoffOpt = None,
    out_file: Annotated[
        Path | None,
        typer.Option("--out", help="CSV file (default: <paths.artifacts>/at_risk.csv)."),
    ] = None,
    engine: EngineOpt = None,
    scheduler: SchedulerOpt = None,
    config: ConfigOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """The ranked list of at-risk customers by value at risk, with reasons and an action.

    Writes the full CSV (every column) and a people's CSV beside it (readable headers, rounded,
    currency, with a glossary). The filters are those of ``POST /at_risk`` and the pages.
    """
    _setup_logging(verbose)
    settings = _settings(config, _engine_options(engine, scheduler))
    from retentio.serving.atrisk import AtRiskFilters

    filters = _run(
        lambda: AtRiskFilters(
            min_risk=min_risk,
            risk_band=risk_band,
            segment=segment,
            rfm_segment=rfm_segment,
            abc_class=abc_class,
            lifecycle_stage=lifecycle_stage,
            value_potential=value_potential,
            action=action,
            min_value=min_value,
        )
    )
    if settings.engine.kind == "dask":
        from retentio.shell.dask_jobs import at_risk_dask

        frame = _on_dask(
            at_risk_dask, settings, data, 7, "at-risk list", top=top, filters=filters, cutoff=cutoff
        )
    else:
        frame = _at_risk_local(settings, data, top=top, filters=filters, cutoff=cutoff)
    if out_file is None:
        out_file = Path(settings.paths.artifacts) / "at_risk.csv"
    _write_frame(frame, out_file)
    from retentio.serving.export import people_frame, write_people_csv

    currency = settings.data.currency
    people = people_frame(
        frame, currency=currency, horizon_days=settings.labels.next_purchase_horizon_days
    )
    people_file = out_file.with_name(f"{out_file.stem}_people.csv")
    glossary = write_people_csv(people, people_file, currency=currency)
    table = Table(title=f"top {min(len(frame), 10)} of {len(frame)} at-risk customers")
    for col in ("customer", "churn p", "value at risk", "action", "reasons"):
        table.add_column(col, overflow="fold")
    for _, row in frame.head(10).iterrows():
        table.add_row(
            str(row["customer_id"]),
            f"{row['churn_probability']:.2f}",
            f"{row['value_at_risk']:,.0f}",
            str(row["recommended_action"]),
            str(row["reasons"]),
        )
    out.print(table)
    out.print(f"-> {out_file} (every column)")
    out.print(f"-> {people_file} (for people; the columns explained in {glossary.name})")


def _at_risk_local(
    settings: Settings, data: str | None, *, top: int, filters: Any, cutoff: str | None
) -> Any:
    """The at-risk list from the persisted population when it is valid, else scored (and
    persisted) now; says which."""
    from retentio.shell.persisted import (  # light: no training or feature code imported
        at_risk_from_population,
        data_fingerprint,
        persisted_population,
    )

    fingerprint = data_fingerprint(_data_dir(settings, data))
    path, why = _run(lambda: persisted_population(settings, fingerprint=fingerprint, cutoff=cutoff))
    if path is not None:
        logger.info("reading the persisted scores %s", path)
        return _run(lambda: at_risk_from_population(path, settings, top=top, filters=filters))
    logger.info("%s: scoring now (the scores are persisted for the next call)", why)
    from retentio.shell.scoring_jobs import at_risk_job

    tables = _load(settings, data)
    t = _cutoff(tables, cutoff)
    source = _data_source(settings, data, tables)
    with progress_steps(SCORE_STEPS + 3, "at-risk list") as step:
        return _run(
            lambda: at_risk_job(
                tables,
                settings,
                cutoff=t,
                top=top,
                filters=filters,
                source=source,
                progress=step,
            )
        )


def _write_frame(frame: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)


def workers_override(current: str | None, service: str, workers: int) -> str:
    """BentoML's ``BENTOML_CONFIG_OVERRIDES`` JSON with ``service``'s worker count set."""
    import json

    overrides = json.loads(current) if current else {}
    overrides.setdefault("services", {}).setdefault(service, {})["workers"] = workers
    return json.dumps(overrides)


@app.command("serve")
def serve(
    port: Annotated[int | None, typer.Option(help="Port (default: serving.port, 3000).")] = None,
    host: Annotated[str | None, typer.Option(help="Host (default: serving.host).")] = None,
    config: ConfigOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Serve the champions over HTTP (BentoML): /score, /score_batch, /at_risk, /events, ...

    ``serving.workers`` worker processes share the persisted scored population. SIGTERM or
    SIGINT (Ctrl-C) stops every server process: requests in flight get
    ``serving.shutdown_grace_s`` seconds to finish, then the port is free.
    """
    import os

    import yaml

    from retentio.shell.server import run_server

    _setup_logging(verbose)
    settings = _settings(
        config, {"serving.port": ("--port", port), "serving.host": ("--host", host)}
    )
    env = dict(os.environ)
    # the service reads exactly this command's settings (project file, data folder, config)
    effective = Path(settings.paths.artifacts) / "serve_settings.yaml"
    effective.parent.mkdir(parents=True, exist_ok=True)
    effective.write_text(yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False))
    env["RETENTIO_CONFIG"] = str(effective.resolve())
    env["BENTOML_CONFIG_OVERRIDES"] = workers_override(
        env.get("BENTOML_CONFIG_OVERRIDES"), "retentio", settings.serving.workers
    )
    cmd = [
        sys.executable, "-m", "bentoml", "serve", "retentio.serving.service:Retentio",
        "--host", settings.serving.host,
        "--port", str(settings.serving.port),
        "--timeout-graceful-shutdown", str(math.ceil(settings.serving.shutdown_grace_s)),
    ]  # fmt: skip
    raise typer.Exit(run_server(cmd, env=env, grace_s=settings.serving.shutdown_grace_s))


# ---------------------------------------------------------------------------------------------
# monitoring and the retraining loop
# ---------------------------------------------------------------------------------------------


def _print_decision(decision: Any) -> None:
    verdict = "[bold red]retrain[/]" if decision.retrain else "[green]keep[/]"
    out.print(f"decision: {verdict}")
    for reason in decision.reasons:
        out.print(f"  - {reason}")


@app.command("monitor")
def monitor(
    data: DataOpt = None,
    cutoff: CutoffOpt = None,
    config: ConfigOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Drift + data quality vs the training reference, prediction drift, realised performance."""
    _setup_logging(verbose)
    settings = _settings(config)
    from retentio.shell.cycle import monitor_job

    tables = _load(settings, data)
    with console.status("monitoring (Evidently drift and data quality)"):
        result = _run(lambda: monitor_job(tables, settings, cutoff=cutoff))
    d = result.drift
    if result.reference is not None:
        out.print(f"compared with: {result.reference.note}")
    out.print(
        f"feature drift: {d.drift_share:.0%} of {d.n_columns} columns "
        f"({', '.join(d.drifted_columns[:8]) or 'none'})"
    )
    if result.prediction_drift is not None:
        p = result.prediction_drift
        out.print(f"prediction drift: {', '.join(p.drifted_columns) or 'none'}")
    for perf in result.performance:
        out.print(
            f"realised at {perf['cutoff']}: AUC {perf.get('auc')}, Brier {perf.get('brier')}, "
            f"LTV bias {perf.get('ltv_bias_pct')}%"
        )
    _print_decision(result.decision)
    out.print(f"report: {d.html_path}\nsummary: {result.summary_path}")


@app.command("cycle")
def cycle(
    data: DataOpt = None,
    cutoff: CutoffOpt = None,
    force_retrain: Annotated[
        bool, typer.Option("--retrain", help="Retrain even if the policy does not ask for it.")
    ] = False,
    every: Annotated[
        str | None,
        typer.Option(
            help="Run a cycle now and then every period (e.g. 7d, 12h) until SIGTERM/SIGINT; "
            "each cycle reloads the data and uses its last day as cutoff."
        ),
    ] = None,
    horizon: Annotated[
        int | None,
        typer.Option(
            help="Retrain with this churn and next-purchase horizon (default: the champion's)."
        ),
    ] = None,
    ltv_horizon: Annotated[
        int | None, typer.Option(help="Retrain with this LTV horizon (default: the champion's).")
    ] = None,
    train_settings: Annotated[
        str,
        typer.Option(
            help="champion: monitor and retrain with the settings the champions were trained "
            "with (horizons, protocol, snapshots); config: with the config file's."
        ),
    ] = "champion",
    engine: EngineOpt = None,
    scheduler: SchedulerOpt = None,
    config: ConfigOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Refresh features -> monitor -> retrain if needed -> promote only a better candidate.

    A file lock (``<paths.artifacts>/cycle.lock``) keeps two cycles from overlapping: a cycle
    that finds it taken names the holder and exits with code 75. On the Dask engine every step
    runs partition by partition and Evidently compares random samples of the active customers
    (the summary says their size).
    """
    _setup_logging(verbose)
    settings = _settings(config, _engine_options(engine, scheduler))
    from retentio.shell.schedule import CycleLock, StopFlag, lock_path, parse_period, run_every

    if train_settings not in ("champion", "config"):
        console.print(
            f"[bold red]error:[/] --train-settings must be champion or config, "
            f"got {train_settings!r}"
        )
        raise typer.Exit(2)
    labels: dict[str, int] = {}
    if horizon is not None:
        labels.update(churn_horizon_days=horizon, next_purchase_horizon_days=horizon)
    if ltv_horizon is not None:
        labels["ltv_horizon_days"] = ltv_horizon
    _settings(config, {f"labels.{k}": (f"--{k}", v) for k, v in labels.items()})  # validates
    how = {"like_champion": train_settings == "champion", "overrides": {"labels": labels}}
    lock = CycleLock(lock_path(Path(settings.paths.artifacts)))
    if every is None:
        _run(lock.acquire)
        try:
            _cycle_once(settings, data, cutoff, force_retrain, how)
        finally:
            lock.release()
        return
    if cutoff is not None:
        console.print(
            "[bold red]error:[/] --cutoff and --every exclude each other: a periodic "
            "cycle always monitors the newest data; drop --cutoff"
        )
        raise typer.Exit(2)
    period = _run(lambda: parse_period(every))
    stop = StopFlag()

    def once() -> None:
        try:
            with lock:
                _cycle_once(settings, data, None, force_retrain, how)
        except typer.Exit as exc:  # already reported; the loop goes on
            if exc.exit_code:
                raise RetentioError(f"cycle ended with exit code {exc.exit_code}") from None
        except RetentioError as exc:
            console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise

    out.print(f"cycling every {every}; SIGTERM or Ctrl-C stops after the current cycle")
    with stop.installed():
        n_failed = run_every(once, period, stop)
    out.print(f"stopped ({n_failed} failed cycles)")


def _cycle_once(
    settings: Settings,
    data: str | None,
    cutoff: str | None,
    force_retrain: bool,
    how: dict[str, Any],
) -> None:
    """One cycle: load, monitor, retrain if needed; print the outcome."""
    if settings.engine.kind == "dask":
        from retentio.shell.dask_cycle import cycle_dask

        result = _on_dask(
            cycle_dask, settings, data, None, "cycle", cutoff=cutoff,
            force_retrain=force_retrain, **how,
        )  # fmt: skip
    else:
        from retentio.shell.cycle import cycle_job

        tables = _load(settings, data)
        source = _data_source(settings, data, tables)
        with progress_steps(None, "cycle") as step:
            result = _run(
                lambda: cycle_job(
                    tables,
                    settings,
                    cutoff=cutoff,
                    force_retrain=force_retrain,
                    progress=step,
                    source=source,
                    **how,
                )
            )
    if result.monitor is not None:
        if result.monitor.reference is not None:
            out.print(f"compared with: {result.monitor.reference.note}")
        if result.monitor.sample:
            out.print(f"sample: {result.monitor.sample}")
        _print_decision(result.monitor.decision)
    for key, (config_value, used) in result.retrain_settings.items():
        out.print(f"  champion's {key} = {used} (config: {config_value})")
    if not result.retrained:
        out.print("no retraining needed; champions unchanged")
    for d in result.promotions:
        verdict = "promoted" if d.promoted else "kept champion"
        out.print(f"{d.task}: {verdict} - {d.reason}", markup=False)
    out.print(f"cycle recorded in MLflow run {result.run_id}")
    if settings.engine.kind == "dask":
        out.print(f"scored dataset (Parquet, one file per partition): {result.population}")
    else:
        out.print(f"persisted population (read by at-risk and the service): {result.population}")


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
