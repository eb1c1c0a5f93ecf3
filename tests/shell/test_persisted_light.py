"""`retentio at-risk` on persisted scores loads no training, feature-building or scoring code."""

from __future__ import annotations

import subprocess
import sys

HEAVY = (
    "lightgbm",
    "sklearn",
    "lifetimes",
    "retentio.training.pipeline",
    "retentio.features.build",
    "retentio.serving.scorer",
)


def test_the_persisted_at_risk_path_imports_no_heavy_module() -> None:
    code = (
        "import sys\n"
        "import retentio.shell.cli, retentio.shell.persisted\n"
        "from retentio.serving.population import PersistedPopulation\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "", f"imported at load: {out}"


def test_the_champion_probe_imports_no_model_code() -> None:
    code = (
        "import sys\n"
        "import retentio.training.registry\n"
        f"print(','.join(m for m in {HEAVY[:3]!r} if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "", f"imported with the registry: {out}"


def test_the_scoring_jobs_import_no_mlflow() -> None:
    """`retentio score` loads the kept champions without MLflow when the registry still names
    them (serving.champion_cache); importing its jobs must not pull MLflow in either."""
    code = (
        "import sys\n"
        "import retentio.shell.cli, retentio.shell.scoring_jobs\n"
        "print(','.join(m for m in ('mlflow', 'sqlalchemy') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "", f"imported with the scoring jobs: {out}"
