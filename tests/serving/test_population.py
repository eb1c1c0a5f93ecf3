"""The persisted scored population: layout, keys, reasons on demand, restarts, staleness.

Real models (small LightGBM, trained once per module on 1,500 synthetic customers), a real
online store and real Arrow files in ``tmp_path``; the registry is replaced by a loader that
returns the trained models under chosen version numbers (the key a population is valid for).
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from retentio.configs.settings import Settings, load_settings
from retentio.features.build import build_features
from retentio.features.schema import ENTITY
from retentio.features.store import OnlineStore, write_offline, write_online
from retentio.features.synth import generate_crm
from retentio.serving.atrisk import AtRiskFilters
from retentio.serving.population import (
    PersistedPopulation,
    ReasonExplainer,
    _versions_tag,
    build_population,
    find_population,
    population_dir,
    write_population,
)
from retentio.serving.scorer import Scorer
from retentio.serving.scoring import SCORE_COLUMNS, rank_at_risk, score_all
from retentio.training.pipeline import train_all
from tests.training import LGBM

VERSIONS = {"churn": "1", "next-purchase": "1", "ltv": "1"}


@pytest.fixture(scope="module")
def tables() -> Any:
    return generate_crm(n_customers=1500, start="2023-01-01", end="2025-06-30", seed=11)


@pytest.fixture(scope="module")
def models(tables: Any) -> dict[str, Any]:
    settings = load_settings(
        training={"min_customers": 50, "min_purchasers": 20, "lightgbm": LGBM},
        labels={"ltv_horizon_days": 180},
    )
    return train_all(tables, settings).models


@pytest.fixture(scope="module")
def features(tables: Any) -> pd.DataFrame:
    cutoff = tables.transactions["timestamp"].max().normalize()
    return build_features(tables, cutoff, load_settings().features)


def _settings(root: Path, **serving: Any) -> Settings:
    return load_settings(
        paths={"artifacts": str(root / "artifacts"), "data": str(root / "data")},
        serving={"precomputed_reasons": 50, "background_reasons": False, **serving},
    )


def _store(root: Path, tables: Any, features: pd.DataFrame) -> None:
    artifacts = root / "artifacts"
    write_offline(features, artifacts / "features")
    write_online(
        features,
        artifacts / "online.sqlite",
        meta={
            "as_of": str(pd.Timestamp(features["as_of"].iloc[0]).date()),
            "built_at": dt.datetime.now(dt.UTC).isoformat(),
        },
        extra_tables=dict(tables.items()),
    )


def _scorer(settings: Settings, models: dict[str, Any], versions: dict[str, str]) -> Scorer:
    path = Path(settings.paths.artifacts) / "online.sqlite"
    return Scorer(
        settings,
        OnlineStore(path),
        loader=lambda _: (dict(models), dict(versions)),
        probe=lambda _: dict(versions),
    )


def test_population_file_holds_every_score_ranked_and_looks_ids_up(
    tmp_path: Path, models: dict[str, Any], features: pd.DataFrame
) -> None:
    settings = _settings(tmp_path)
    date = features["as_of"].iloc[0]
    built = build_population(models, VERSIONS, features, settings, feature_date=date)
    assert built.counts.rows_scored == len(features)
    assert built.counts.reasons_computed == 50
    path = write_population(built.table, population_dir(settings))
    pop = PersistedPopulation(path)
    expected = score_all(models, features, settings).set_index(ENTITY)

    ids = list(features[ENTITY].sample(40, random_state=1)) + ["nobody"]
    pos = pop.positions(ids)
    assert (pos[:-1] >= 0).all() and pos[-1] == -1
    rows = pd.DataFrame(pop.rows(pos[:-1])).set_index(ENTITY)
    for col in ("churn_probability", "p_purchase_90d", "predicted_ltv", "value_at_risk"):
        np.testing.assert_allclose(rows[col], expected.loc[ids[:-1], col], rtol=1e-12)
    assert list(rows["recommended_action"]) == list(expected.loc[ids[:-1], "recommended_action"])
    assert list(pop.table.column_names[: len(SCORE_COLUMNS)]) == list(SCORE_COLUMNS)

    ranked_var = pop.values("value_at_risk")[pop.rank]
    assert np.all(np.diff(ranked_var) <= 0)
    assert ranked_var[0] == pytest.approx(expected["value_at_risk"].max())
    band = pop.ranked(risk_band="high")
    assert len(band) == int((expected["risk_band"] == "high").sum())
    assert set(pop.frame(band)["risk_band"]) == {"high"}
    median = float(expected["ltv_if_retained"].median())
    for filters in (
        AtRiskFilters(),
        AtRiskFilters(min_risk="low", min_value=median),
        AtRiskFilters(segment="A"),
        AtRiskFilters(min_risk="high", value_potential="high_value_high_potential"),
    ):  # the persisted list keeps exactly the rows of the frame's rule
        kept = pop.frame(pop.ranked(filters))
        same = rank_at_risk(expected.reset_index(), top=len(expected), filters=filters)
        assert sorted(kept[ENTITY]) == sorted(same[ENTITY])
        assert np.all(np.diff(kept["value_at_risk"].to_numpy()) <= 0)
    assert len(pop.ranked()) < len(pop.ranked(min_risk="low")) == len(pop)
    every = pop.frame(np.arange(len(pop))).set_index(ENTITY).loc[expected.index]
    pd.testing.assert_frame_equal(every, expected[every.columns], check_dtype=False)

    # every column a request reads is a view of the mapped file, not a copy per worker
    pop._source.seek(0)
    mapped = pop._source.read_buffer()
    inside = range(mapped.address, mapped.address + mapped.size)
    assert pop.x is not None
    arrays = [pop.x, pop.rank, pop._keys, *(values for values, _ in pop._columns.values())]
    assert all(a.ctypes.data in inside and not a.flags.owndata for a in arrays)


def test_reasons_on_demand_equal_the_model_contributions_and_the_precomputed_ones(
    tmp_path: Path, models: dict[str, Any], features: pd.DataFrame
) -> None:
    settings = _settings(tmp_path)
    built = build_population(
        models, VERSIONS, features, settings, feature_date=features["as_of"].iloc[0]
    )
    pop = PersistedPopulation(write_population(built.table, population_dir(settings)))
    explainer = ReasonExplainer.from_model(models["churn"])
    assert explainer is not None and pop.x is not None
    ids = list(features[ENTITY].iloc[:25])
    pos = pop.positions(ids)
    expected = models["churn"].contributions(features.iloc[:25])
    got = explainer.contributions(pop.x[pos])
    np.testing.assert_allclose(got, expected.drop(columns="bias").to_numpy(), atol=1e-9)

    top = pop.rank[:50]  # precomputed rows: on-demand reasons are the same phrases
    stored = pop.stored_reasons(top)
    assert all(r is not None for r in stored) and any(stored)
    assert explainer.reasons(pop.x[top]) == stored
    assert pop.stored_reasons(pop.rank[50:60]) == [None] * 10


def test_at_risk_rows_beyond_the_precomputed_reasons_get_theirs_from_the_kept_champion(
    tmp_path: Path, models: dict[str, Any], features: pd.DataFrame, monkeypatch: Any
) -> None:
    from retentio.serving import champion_cache
    from retentio.shell.persisted import at_risk_from_population
    from retentio.training import registry

    settings = _settings(tmp_path)  # reasons precomputed for the top 50 only
    built = build_population(
        models, VERSIONS, features, settings, feature_date=features["as_of"].iloc[0]
    )
    path = write_population(built.table, population_dir(settings))
    monkeypatch.setattr(champion_cache, "load_cached", lambda _: (dict(models), dict(VERSIONS)))

    def no_mlflow(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the kept champion answers: no registry load")

    monkeypatch.setattr(registry, "load_task_model", no_mlflow)
    frame = at_risk_from_population(path, settings, top=120, filters=AtRiskFilters(min_risk="low"))
    pop = PersistedPopulation(path)
    positions = pop.positions(list(frame[ENTITY]))
    stored = pop.stored_reasons(positions)
    assert 0 < sum(r is None for r in stored) < len(frame)  # both kinds of rows are listed
    explainer = ReasonExplainer.from_model(models["churn"])
    assert explainer is not None and pop.x is not None
    expected = ["; ".join(r) for r in explainer.reasons(pop.x[positions])]
    assert list(frame["reasons"]) == expected
    assert sum(bool(r) for r in expected) > len(frame) // 2


def test_stale_populations_are_never_found(
    tmp_path: Path, models: dict[str, Any], features: pd.DataFrame
) -> None:
    settings = _settings(tmp_path)
    folder = population_dir(settings)
    date = features["as_of"].iloc[0]
    built = build_population(models, VERSIONS, features, settings, feature_date=date)
    write_population(built.table, folder)
    v1 = find_population(folder, versions=VERSIONS, feature_date=date)
    assert v1 is not None
    v2 = {"churn": "2", "next-purchase": "1", "ltv": "1"}

    # a file whose name claims other versions but whose content is v1's is refused
    assert find_population(folder, versions=v2, feature_date=date) is None
    forged = v1.with_name(f"population_{v1.stem.split('_')[1]}_{_versions_tag(v2)}.arrow")
    shutil.copyfile(v1, forged)  # v2's file name, v1's content and metadata
    assert find_population(folder, versions=v2, feature_date=date) is None
    # another feature date, or a test the caller adds (e.g. written after a store rebuild)
    assert find_population(folder, versions=VERSIONS, feature_date="2025-07-01") is None
    assert (
        find_population(folder, versions=VERSIONS, feature_date=date, accept=lambda m: False)
        is None
    )


def test_restart_reads_the_persisted_population_without_scoring(
    tmp_path: Path, tables: Any, models: dict[str, Any], features: pd.DataFrame
) -> None:
    settings = _settings(tmp_path)
    _store(tmp_path, tables, features)
    first = _scorer(settings, models, VERSIONS)
    assert first.counts.rows_scored == len(features)
    assert first.counts.populations_built == 1 and first.counts.populations_read == 0
    ids = list(features[ENTITY].iloc[::100])
    before = first.score(ids)
    listed = first.at_risk(top=20)
    first.close()

    again = _scorer(settings, models, VERSIONS)  # a restart
    try:
        assert again.counts.rows_scored == 0
        assert again.counts.populations_built == 0 and again.counts.populations_read == 1
        assert again.counts.reasons_computed == 0
        assert again._state.base._loaded is None  # the store's rows were not even read
        after = again.score(ids)
        assert after == before
        assert again.at_risk(top=20) == listed
        # only the asked rows outside the precomputed top had their reasons computed
        pop = again._bundle.population
        stored = pop.stored_reasons(pop.positions(ids))
        assert 0 < again.counts.reasons_computed == sum(r is None for r in stored)
        # a recomputed row (inline features) matches its persisted lookup
        row = {k: v for k, v in features.iloc[0].to_dict().items() if not pd.isna(v)}
        inline = again.score_features([row])[0]
        looked_up = again.score([str(row[ENTITY])])[0]
        for key in ("churn_probability", "predicted_ltv", "value_at_risk"):
            assert inline[key] == pytest.approx(looked_up[key], rel=1e-9)
        assert inline["expected_next_purchase_date"] == looked_up["expected_next_purchase_date"]
        assert inline["next_purchase_interval"] == looked_up["next_purchase_interval"]
        assert inline["reasons"] == looked_up["reasons"]
        risky = [r for r in after if r["churn_probability"] > 0.5]
        assert risky and all(1 <= len(r["reasons"]) <= 3 for r in risky)
    finally:
        again.close()


def test_the_service_serves_what_retentio_score_persisted(
    tmp_path: Path, tables: Any, models: dict[str, Any], features: pd.DataFrame
) -> None:
    settings = _settings(tmp_path)
    _store(tmp_path, tables, features)
    date = features["as_of"].iloc[0]
    built = build_population(models, VERSIONS, features, settings, feature_date=date)
    write_population(built.table, population_dir(settings))  # what `retentio score` does
    scorer = _scorer(settings, models, VERSIONS)
    try:
        assert scorer.counts.rows_scored == 0 and scorer.counts.populations_read == 1
        ids = [str(c) for c in features[ENTITY].iloc[:40]]
        served = {r["customer_id"]: r for r in scorer.score(ids)}
        batch = built.scores.set_index(ENTITY)
        for cid in ids:
            assert served[cid]["churn_probability"] == pytest.approx(
                batch.loc[cid, "churn_probability"], rel=1e-12
            )
            assert served[cid]["value_at_risk"] == pytest.approx(
                batch.loc[cid, "value_at_risk"], rel=1e-12, nan_ok=True
            )
    finally:
        scorer.close()


def test_stale_populations_are_never_served_and_the_fallback_says_so(
    tmp_path: Path,
    tables: Any,
    models: dict[str, Any],
    features: pd.DataFrame,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = _settings(tmp_path)
    _store(tmp_path, tables, features)
    folder = population_dir(settings)
    date = features["as_of"].iloc[0]
    first = _scorer(settings, models, VERSIONS)
    first.close()
    assert find_population(folder, versions=VERSIONS, feature_date=date) is not None

    # other model versions: scored again, persisted, served with the new versions
    v2 = {"churn": "2", "next-purchase": "1", "ltv": "1"}
    with caplog.at_level("WARNING", logger="retentio.serving.scorer"):
        other = _scorer(settings, models, v2)
    try:
        assert other.counts.rows_scored == len(features) and other.counts.populations_read == 0
        assert "no valid persisted population for versions" in caplog.text
        row = other.score([str(features[ENTITY].iloc[0])])[0]
        assert row["model_versions"] == v2
        assert other._bundle.population.versions == v2
    finally:
        other.close()
    assert find_population(folder, versions=v2, feature_date=date) is not None

    # a store rebuilt after the population was written: its files are stale, scored again
    _store(tmp_path, tables, features)
    rebuilt = _scorer(settings, models, VERSIONS)
    try:
        assert rebuilt.counts.rows_scored == len(features)
        assert rebuilt.counts.populations_built == 1
    finally:
        rebuilt.close()


def test_a_later_scoring_date_is_served_only_from_this_stores_population(
    tmp_path: Path, tables: Any, models: dict[str, Any], features: pd.DataFrame
) -> None:
    settings = _settings(tmp_path)
    _store(tmp_path, tables, features)
    date = pd.Timestamp(features["as_of"].iloc[0])
    later = date + pd.Timedelta(days=3)
    # a population at the later date scored from other data (as `retentio score` would)
    elsewhere = build_population(models, VERSIONS, features, settings, feature_date=later)
    write_population(elsewhere.table, population_dir(settings))
    first = _scorer(settings, models, VERSIONS)
    buyer = str(features.loc[features["recency_days"].notna(), ENTITY].iloc[0])
    first.add_events(buyer, transactions=[{"timestamp": f"{later.date()}T09:00", "amount": 5.0}])
    assert first.scoring_date() == later
    assert first.reload_if_changed()  # the bundle of the new date
    assert first._bundle.date == later
    own = first._bundle.population
    assert own.meta["source"]["store_built_at"] == first._state.built_at
    assert own.path != find_population(  # not the file scored from other data
        population_dir(settings), versions=VERSIONS, feature_date=later, accept=lambda m: False
    )
    assert own.thresholds == first._bundle.thresholds  # the store date's thresholds
    store_pop = PersistedPopulation(
        find_population(population_dir(settings), versions=VERSIONS, feature_date=date)  # type: ignore[arg-type]
    )
    assert own.thresholds == store_pop.thresholds
    scored_after_build = first.counts.rows_scored
    ids = [str(c) for c in features[ENTITY].iloc[:30]] + [buyer]
    before = first.score(ids)
    first.close()

    again = _scorer(settings, models, VERSIONS)  # restart: the same events, the same date
    try:
        assert again.counts.rows_scored == 0 and again.counts.populations_read == 1
        assert again._bundle.date == later
        assert again.score(ids) == before
    finally:
        again.close()
    assert scored_after_build == 2 * len(features)  # at the store date, then at the later date


# ---------------------------------------------------------------------------------------------
# the workspace pages' data, persisted beside the population
# ---------------------------------------------------------------------------------------------


def _pages(scorer: Scorer, settings: Settings) -> Any:
    from starlette.testclient import TestClient

    from retentio.serving.ui import create_app

    app = create_app(lambda: scorer, settings=lambda: settings, keys=lambda: None)
    return app.state.workspace, TestClient(app)


def test_a_restart_serves_every_page_from_the_page_data_written_with_the_population(
    tmp_path: Path, tables: Any, models: dict[str, Any], features: pd.DataFrame
) -> None:
    from retentio.serving.page_data import (
        FEATURE_COLUMNS,
        page_totals,
        pages_path,
        read_page_data,
    )
    from retentio.serving.ui.app import _fmt_num
    from retentio.shell.jobs import population_job

    settings = _settings(tmp_path)
    _store(tmp_path, tables, features)
    date = features["as_of"].iloc[0]
    job = population_job(models, VERSIONS, features, settings, cutoff=date)  # retentio score
    assert pages_path(job.population).exists()

    # the persisted totals are those of the rows: scores joined with the features by id
    shown = [c for c in FEATURE_COLUMNS if c in features.columns]
    rows = job.scores.merge(features[[ENTITY, *shown]], on=ENTITY, how="left")
    expected = page_totals(rows, features, active_days=settings.labels.active_days)
    data = read_page_data(PersistedPopulation(job.population))
    assert data is not None
    _same(data.totals.to_json(), expected.to_json())  # up to the order of float sums
    assert data.totals.actions == expected.actions and data.totals.typical == expected.typical
    kpi = {k.name: k.value for k in data.totals.kpis}
    assert kpi["Customers"] == features["recency_days"].notna().sum()
    assert kpi["Value at risk"] == pytest.approx(job.scores["value_at_risk"].sum())
    loyal = {
        c.link["loyalty"]: c.count
        for row in data.totals.matrices["Loyalty x profitability"]
        for c in row
    }
    assert loyal == {k: int((features["loyalty_segment"] == k).sum()) for k in loyal}
    assert sum(c.count for row in data.totals.matrices["RFM segments"] for c in row) == len(rows)
    counts, _ = data.totals.histograms["churn"]
    assert counts.sum() == job.scores["churn_probability"].notna().sum()

    # a restart: no page reads the store's population or recomputes the totals
    scorer = _scorer(settings, models, VERSIONS)
    try:
        workspace, client = _pages(scorer, settings)
        overview = client.get("/")
        assert overview.status_code == 200 and "server-timing" in overview.headers
        assert f"{kpi['Customers']:,.0f}" in overview.text
        assert workspace.counts.page_data_read == 1 and workspace.counts.page_data_built == 0
        sorted_page = client.get("/at-risk?sort=churn_probability&order=desc&loyalty=stranger")
        assert sorted_page.status_code == 200
        shown = [float(x) for x in _cells(sorted_page.text, "data-churn") if x != "None"]
        assert shown and shown == sorted(shown, reverse=True)
        strangers = set(features.loc[features["loyalty_segment"] == "stranger", ENTITY])
        assert set(_cells(sorted_page.text, "data-customer")) <= strangers
        cid = _cells(sorted_page.text, "data-customer")[0]
        card = client.get(f"/customer/{cid}")
        assert card.status_code == 200 and "Days since the last purchase" in card.text
        recency = features.set_index(ENTITY).loc[cid, "recency_days"]
        assert f"<dd>{_fmt_num(recency)}</dd>" in card.text  # the customer's own row
        assert client.get("/at-risk?sort=p_alive&order=asc&page=2").status_code == 200
        assert workspace.counts.page_data_read == 1 and workspace.counts.page_data_built == 0
        assert scorer._state.base._loaded is None  # the store's 1,500 rows were never read
    finally:
        scorer.close()


def _same(got: Any, want: Any) -> None:
    if isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys()
        for key in want:
            _same(got[key], want[key])
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want)
        for a, b in zip(got, want, strict=True):
            _same(a, b)
    elif isinstance(want, float):
        assert got == pytest.approx(want, rel=1e-9, nan_ok=True)
    else:
        assert got == want


def _cells(html: str, attribute: str) -> list[str]:
    import re

    return re.findall(rf'{attribute}="([^"]+)"', html)


def test_page_data_of_another_population_is_never_read_and_is_rebuilt_once(
    tmp_path: Path, tables: Any, models: dict[str, Any], features: pd.DataFrame
) -> None:
    from retentio.serving.page_data import pages_path, read_page_data
    from retentio.shell.erase import erase_from_table_files
    from retentio.shell.jobs import population_job

    settings = _settings(tmp_path)
    _store(tmp_path, tables, features)
    date = features["as_of"].iloc[0]
    job = population_job(models, VERSIONS, features, settings, cutoff=date)
    written = pages_path(job.population).read_bytes()
    buyer = str(features.loc[features["recency_days"].notna(), ENTITY].iloc[0])
    stale = pages_path(job.population).with_name("stale.arrow")
    stale.write_bytes(written)  # the page data as it was before the erasure
    removed = erase_from_table_files(tmp_path / "artifacts", {buyer})
    assert job.population.name in " ".join(removed)  # the population lost a row
    assert not pages_path(job.population).exists()  # and its page data went with it
    stale.rename(pages_path(job.population))  # were it still there, it would not be read
    assert read_page_data(PersistedPopulation(job.population)) is None

    scorer = _scorer(settings, models, VERSIONS)
    try:
        workspace, client = _pages(scorer, settings)
        assert client.get("/").status_code == 200
        assert workspace.counts.page_data_built == 1  # computed once and written
        kpi = {k.name: k.value for k in workspace.view().kpis}
        assert kpi["Customers"] == features["recency_days"].notna().sum() - 1
        again, client = _pages(scorer, settings)  # another worker, or the next start
        assert client.get("/").status_code == 200
        assert again.counts.page_data_read == 1 and again.counts.page_data_built == 0
    finally:
        scorer.close()


def test_stored_text_columns_equal_arrows_own_dictionary_encoding() -> None:
    """Text columns are encoded from the codes of their distinct values: the same dictionary
    (order of first appearance in the stored rows, one null entry) as Arrow's encoder."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from retentio.serving.population import _encode

    rng = np.random.default_rng(3)
    labels = np.array(["high", "low", None, np.nan, "medium"], dtype=object)
    values = pd.Series(labels[rng.integers(0, len(labels), 5_000)], name="risk_band")
    order = rng.permutation(len(values))
    stored = _encode(values, order)
    taken = values.to_numpy(dtype=object)[order]
    expected = pc.dictionary_encode(
        pa.array([None if pd.isna(v) else v for v in taken], pa.string()),
        null_encoding="encode",
    )
    assert stored.equals(expected)
    assert stored.dictionary.null_count == 1
    dates = pd.Series(pd.to_datetime(["2025-01-02", None, "2025-03-04"]), name="as_of")
    assert _encode(dates, np.array([2, 0, 1])).to_pylist() == [
        pd.Timestamp("2025-03-04").value,
        pd.Timestamp("2025-01-02").value,
        np.iinfo(np.int64).min,
    ]
    assert _encode(values.iloc[:0], np.array([], dtype=np.int64)).equals(expected.slice(0, 0))


def test_every_customers_reasons_kept_off_the_request_path_are_those_computed_on_demand(
    tmp_path: Path, tables: Any, models: dict[str, Any], features: pd.DataFrame
) -> None:
    settings = _settings(tmp_path)
    _store(tmp_path, tables, features)
    ids = list(features[ENTITY].iloc[::37])
    first = _scorer(settings, models, VERSIONS)  # background_reasons off: reasons on demand
    on_demand = first.score(ids)
    computed = first.counts.reasons_computed
    assert computed > 0 and first._bundle.population.candidates is None
    first.close()

    on = _settings(tmp_path, background_reasons=True)
    again = _scorer(on, models, VERSIONS)
    try:
        thread = again._reasons_thread
        assert thread is not None
        thread.join(timeout=300)
        pop = again._bundle.population
        assert again.counts.reasons_kept == len(pop) and pop.candidates is not None
        explainer = again._bundle.explainer
        assert explainer is not None and pop.x is not None
        rows = np.arange(0, len(pop), 7)
        assert explainer.phrase(pop.x[rows], pop.candidates[rows]) == explainer.reasons(pop.x[rows])
        assert again.score(ids) == on_demand
        assert again.counts.reasons_computed == 0  # no TreeSHAP on the request path
    finally:
        again.close()

    third = _scorer(on, models, VERSIONS)  # a restart maps the kept candidates
    try:
        assert third._reasons_thread is None and third._bundle.population.candidates is not None
        assert third.score(ids) == on_demand and third.counts.reasons_computed == 0
    finally:
        third.close()

    # the population rewritten under the same name: the old candidates are not its own
    pop = PersistedPopulation(third._bundle.population.path)
    rebuilt = build_population(models, VERSIONS, features, on, feature_date=pop.feature_date)
    path = write_population(rebuilt.table, population_dir(on))
    assert path == pop.path and PersistedPopulation(path).candidates is None


def test_a_stopped_candidates_computation_goes_on_where_it_stopped(
    tmp_path: Path, models: dict[str, Any], features: pd.DataFrame
) -> None:
    from retentio.serving.population import candidates_path, write_candidates

    settings = _settings(tmp_path)
    date = features["as_of"].iloc[0]
    built = build_population(models, VERSIONS, features, settings, feature_date=date)
    pop = PersistedPopulation(write_population(built.table, population_dir(settings)))
    explainer = ReasonExplainer.from_model(models["churn"])
    assert explainer is not None and pop.x is not None
    rows: list[int] = []
    compute = explainer.candidates

    def counted(x: np.ndarray) -> np.ndarray:
        rows.append(len(x))
        return compute(x)

    explainer.candidates = counted  # type: ignore[method-assign]
    chunks = iter(range(10**6))
    assert write_candidates(pop, explainer, chunk=100, stop=lambda: next(chunks) >= 3) is None
    assert sum(rows) == 300 and not candidates_path(pop).exists()  # stopped: nothing served
    rows.clear()
    path = write_candidates(pop, explainer, chunk=100)  # goes on from row 300
    assert path == candidates_path(pop) and sum(rows) == len(pop) - 300
    assert not list(path.parent.glob(".*.partial"))
    kept = PersistedPopulation(pop.path).candidates
    assert kept is not None
    np.testing.assert_array_equal(kept, compute(pop.x))
