"""The Scorer's public behaviour, with its loader and probe injected; churn monotonicity.

Real models trained once on a small synthetic CRM; the loader hands the Scorer the LightGBM
churn candidate (the one carrying the monotone constraints) and the served next-purchase and
LTV models, and the probe plays the registry's champion aliases.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from retentio.configs.settings import Settings, load_settings
from retentio.errors import ContractError, CustomerNotFoundError
from retentio.features.privacy import hash_id, id_hash_key
from retentio.features.store import OnlineStore, build_feature_store
from retentio.features.synth import generate_crm
from retentio.serving.prediction_log import read_prediction_log
from retentio.serving.scorer import Scorer
from retentio.training.churn import CHURN_MONOTONE
from retentio.training.pipeline import train_all
from tests.training import LGBM

pytestmark = pytest.mark.slow

VERSIONS = {"churn": "1", "next-purchase": "1", "ltv": "1"}


@dataclass
class Registry:
    """Plays the registry: what the probe answers and how often the loader ran."""

    models: dict[str, Any]
    versions: dict[str, str | None] = field(default_factory=lambda: dict(VERSIONS))
    n_loads: int = 0

    def load(self, settings: Settings) -> tuple[dict[str, Any], dict[str, str]]:
        self.n_loads += 1
        return dict(self.models), {k: str(v) for k, v in self.versions.items()}

    def probe(self, settings: Settings) -> dict[str, str | None]:
        return dict(self.versions)


@dataclass
class World:
    settings: Settings
    result: Any
    ids: list[str]
    buyers: list[str]
    models: dict[str, Any]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("scorer")
    settings = load_settings(
        None,
        paths={"artifacts": str(root / "artifacts"), "data": str(root / "data")},
        mlflow={"tracking_uri": f"sqlite:///{root / 'mlflow.db'}"},
        training={"lightgbm": LGBM},
    )
    tables = generate_crm(n_customers=900, start="2023-01-01", end="2025-06-30", seed=21)
    frame, _ = build_feature_store(
        tables, "2025-06-30", settings.features, Path(settings.paths.artifacts)
    )
    result = train_all(tables, settings)
    models = dict(result.models)
    models["churn"] = result.candidates["churn"]["lightgbm"]
    ids = frame["customer_id"].astype(str).tolist()
    buyers = frame.loc[frame["recency_days"].notna(), "customer_id"].astype(str).tolist()
    return World(settings, result, ids, buyers, models)


def _scorer(world: World, registry: Registry | None = None) -> tuple[Scorer, Registry]:
    registry = registry or Registry(world.models)
    store = OnlineStore(Path(world.settings.paths.artifacts) / "online.sqlite")
    scorer = Scorer(world.settings, store, loader=registry.load, probe=registry.probe)
    return scorer, registry


def test_scores_in_the_order_asked_with_versions_and_date(world: World) -> None:
    scorer, registry = _scorer(world)
    try:
        assert scorer.ready and registry.n_loads == 1
        assert scorer.versions == VERSIONS
        assert scorer.feature_date == "2025-06-30"
        ids = [world.buyers[7], world.buyers[2], world.ids[-1]]
        rows = scorer.score(ids)
        assert [r["customer_id"] for r in rows] == ids
        for row in rows:
            assert 0.0 <= row["churn_probability"] <= 1.0
            assert row["risk_band"] in ("low", "medium", "high")
            assert row["model_versions"] == VERSIONS
            assert row["feature_date"] == "2025-06-30"
            assert row["value_at_risk"] is None or math.isfinite(row["value_at_risk"])
        assert scorer.score(ids[:1]) == rows[:1]  # the same answer twice
    finally:
        scorer.close()


def test_unknown_ids_and_empty_requests_are_refused(world: World) -> None:
    scorer, _ = _scorer(world)
    try:
        with pytest.raises(CustomerNotFoundError, match="'nobody-1'.*'nobody-2'"):
            scorer.score([world.ids[0], "nobody-1", "nobody-2"])
        with pytest.raises(ContractError, match="no customer ids"):
            scorer.score([])
        with pytest.raises(ContractError, match="unknown feature"):
            scorer.score_features([{"recency_days": 3.0, "not_a_feature": 1}])
        with pytest.raises(ContractError, match="finite"):
            scorer.score_features([{"recency_days": float("inf")}])
        with pytest.raises(ContractError):
            scorer.at_risk(top=0)
    finally:
        scorer.close()


def _store_rows(world: World, ids: list[str]) -> list[dict[str, Any]]:
    store = OnlineStore(Path(world.settings.paths.artifacts) / "online.sqlite")
    try:
        frame = store.get(ids)
    finally:
        store.close()
    rows = []
    for rec in frame.to_dict("records"):
        rows.append({k: v for k, v in rec.items() if v is not None and not _nan(v)})
    return rows


def _nan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)


def test_inline_features_score_like_the_stored_customer(world: World) -> None:
    scorer, _ = _scorer(world)
    try:
        ids = world.buyers[10:15]
        stored = scorer.score(ids)
        inline = scorer.score_features(_store_rows(world, ids))
        for a, b in zip(stored, inline, strict=True):
            assert b["customer_id"] == a["customer_id"]
            for key in ("churn_probability", "p_purchase_90d", "predicted_ltv", "value_at_risk"):
                assert b[key] == pytest.approx(a[key], rel=1e-6, abs=1e-9), key
            assert b["recommended_action"] == a["recommended_action"]
    finally:
        scorer.close()


def test_at_risk_is_ranked_filtered_and_paged(world: World) -> None:
    scorer, _ = _scorer(world)
    try:
        first = scorer.at_risk(top=40, page=1, page_size=15)
        second = scorer.at_risk(top=40, page=2, page_size=15)
        assert first["total"] == 40 and first["page_size"] == 15
        items = first["items"] + second["items"]
        values = [r["value_at_risk"] for r in items]
        assert values == sorted(values, reverse=True)
        assert len({r["customer_id"] for r in items}) == 30
        high = scorer.at_risk(top=10_000, risk_band="high", page_size=10_000)
        assert high["total"] == len(high["items"])
        assert all(r["risk_band"] == "high" for r in high["items"])
        rich = scorer.at_risk(top=10_000, min_value=100.0, page_size=10_000)
        assert all(r["ltv_if_retained"] >= 100.0 for r in rich["items"])
        floor = scorer.at_risk(top=10_000, page_size=10_000)
        everyone = scorer.at_risk(top=10_000, page_size=10_000, min_risk="low")
        assert {r["risk_band"] for r in floor["items"]} <= {"medium", "high"}
        assert floor["total"] < everyone["total"]
        with pytest.raises(ContractError, match="segment 'vip' is not one of"):
            scorer.at_risk(segment="vip")
        with pytest.raises(ContractError, match="unknown at-risk filter"):
            scorer.at_risk(segmnet="A")
    finally:
        scorer.close()


def test_reload_follows_the_probe_and_keeps_serving_on_a_missing_alias(world: World) -> None:
    scorer, registry = _scorer(world)
    try:
        before = scorer.score([world.buyers[0]])[0]
        assert scorer.reload_if_changed() is False and registry.n_loads == 1
        registry.versions = {**VERSIONS, "churn": "2"}
        assert scorer.reload_if_changed() is True
        assert registry.n_loads == 2
        assert scorer.versions["churn"] == "2"
        after = scorer.score([world.buyers[0]])[0]
        assert after["model_versions"]["churn"] == "2"
        assert after["churn_probability"] == pytest.approx(before["churn_probability"])
        registry.versions = {**VERSIONS, "churn": None}  # an alias removed: keep serving
        assert scorer.reload_if_changed() is False
        assert registry.n_loads == 2 and scorer.versions["churn"] == "2"
    finally:
        scorer.close()


def test_prediction_log_keeps_a_keyed_hash_not_the_id(world: World) -> None:
    scorer, _ = _scorer(world)
    artifacts = Path(world.settings.paths.artifacts)
    target = world.buyers[3]
    try:
        scorer.score([target])
    finally:
        scorer.close()
    logged = read_prediction_log(artifacts / "predictions" / "predictions.jsonl")
    assert "customer_id" not in logged.columns
    assert hash_id(target, id_hash_key(artifacts)) in set(logged["customer_id_hash"])
    assert target.encode() not in (artifacts / "predictions" / "predictions.jsonl").read_bytes()


def test_an_erased_customer_is_unknown_after_the_reload(world: World, tmp_path: Path) -> None:
    import shutil

    from retentio.shell.erase import erase_customers

    artifacts = tmp_path / "artifacts"  # a private copy: the erasure must not reach the others
    shutil.copytree(world.settings.paths.artifacts, artifacts)
    settings = world.settings.model_copy(
        update={"paths": world.settings.paths.model_copy(update={"artifacts": str(artifacts)})}
    )
    registry = Registry(world.models)
    scorer = Scorer(
        settings,
        OnlineStore(artifacts / "online.sqlite"),
        loader=registry.load,
        probe=registry.probe,
    )
    target = world.buyers[4]
    try:
        assert scorer.score([target])[0]["customer_id"] == target
        erase_customers(settings, [target])
        assert scorer.reload_if_changed() is True
        with pytest.raises(CustomerNotFoundError, match=target):
            scorer.score([target])
        listed = scorer.at_risk(top=100_000, page_size=100_000)["items"]
        assert target not in {row["customer_id"] for row in listed}
        assert scorer.score([world.buyers[5]])[0]["customer_id"] == world.buyers[5]
    finally:
        scorer.close()


# ------------------------------------------------------------------------------------------
# monotone constraints of the churn model
# ------------------------------------------------------------------------------------------


def _raised(rows: list[dict[str, Any]], column: str, n_steps: int) -> list[dict[str, Any]]:
    """Each row ``n_steps`` times, ``column`` raised further each time.

    ``recency_days`` goes up to ``T_days`` (no purchase before the first one); counts by 0,
    5, 30, 120, 400 ...
    """
    out = []
    for row in rows:
        value = float(row.get(column, 0.0) or 0.0)
        if column == "recency_days":
            room = float(row["T_days"]) - value
            steps = np.linspace(0.0, room, n_steps)
        else:
            steps = np.array([0.0, 5.0, 30.0, 120.0, 400.0, 1000.0])[:n_steps]
        for step in steps:
            out.append({**row, column: value + float(step)})
    return out


@pytest.mark.parametrize(
    "column", [c for c in ("recency_days", "n_orders", "n_orders_90d", "n_orders_365d")]
)
def test_served_churn_probability_follows_the_declared_direction(world: World, column: str) -> None:
    """Through the Scorer: raising a constrained feature moves churn only its declared way.

    The ``btyd_*`` inputs are recomputed from the raised row, so this checks the served path as
    a whole. ``frequency`` is left to the model-input test below: at a fixed recency, more
    purchases lower BG/NBD's ``p_alive`` (a frequent buyer who stopped is more likely gone), so
    its served effect has no single direction by design.
    """
    sign = CHURN_MONOTONE[column]
    scorer, _ = _scorer(world)
    n_steps = 5
    try:
        rows = _store_rows(world, world.buyers[:25])
        for row in rows:
            row.pop("customer_id")
        scores = scorer.score_features(_raised(rows, column, n_steps))
    finally:
        scorer.close()
    p = np.array([r["churn_probability"] for r in scores]).reshape(len(rows), n_steps)
    moves = np.diff(p, axis=1) * sign
    assert (moves >= -1e-12).all(), (column, p[(moves < -1e-12).any(axis=1)][:3])
    if column == "recency_days":  # the strongest churn feature: it must move the score
        assert (p[:, -1] - p[:, 0] > 0).any()


def test_churn_model_respects_every_declared_constraint_on_its_inputs(world: World) -> None:
    """On the model input (``btyd_*`` held fixed): each declared column, both directions."""
    churn = world.models["churn"]
    features = pd.DataFrame(_store_rows(world, world.buyers[:40]))
    from retentio.serving.scorer import typed_features

    X = churn.model_input(typed_features(features))
    declared = [c for c in CHURN_MONOTONE if c in churn.model_columns]
    assert {"recency_days", "frequency", "btyd_p_alive"} <= set(declared)
    for column in declared:
        base = X[column].to_numpy(dtype=float)
        scale = np.nanstd(base) or 1.0
        p = []
        for k in (-2.0, -1.0, 0.0, 1.0, 2.0, 4.0):
            moved = X.copy()
            moved[column] = base + k * scale
            raw = churn.raw(moved)
            p.append(churn.calibrator.predict(raw) if churn.calibrator is not None else raw)
        moves = np.diff(np.vstack(p), axis=0) * CHURN_MONOTONE[column]
        assert (moves >= -1e-12).all(), column
