"""Live events through the Scorer: late dates, duplicates, new customers, batches, restarts.

A small real setup (synthetic CRM, store built at a cutoff before the data ends, models trained
once) and a fresh ``Scorer`` per test over a private copy of the artifacts; models come through
the loader injection point, so no registry is involved. The expected scores are computed
independently: a customer's features rebuilt from the source data plus the events it received
(``build_features`` on those tables at the scoring date; a customer without events: its store
row moved to that date) and scored like a batch.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from retentio.configs.settings import Settings, load_settings
from retentio.errors import ContractError, CustomerNotFoundError, InsufficientDataError
from retentio.features.build import build_features
from retentio.features.cutoff import history
from retentio.features.schema import ENTITY, Tables
from retentio.features.store import OnlineStore, build_feature_store, read_offline
from retentio.features.synth import generate_crm
from retentio.serving.live import EventLedger, check_event, event_window
from retentio.serving.scorer import Population, Scorer, shift_to, typed_features
from retentio.serving.scoring import score_all, score_thresholds
from retentio.training.pipeline import train_all
from tests.training import LGBM

pytestmark = pytest.mark.slow

STORE_DATE = pd.Timestamp("2025-06-30")
COMPARED = ("churn_probability", "p_purchase_90d", "predicted_ltv", "value_at_risk")


@dataclass
class World:
    """The source data, the trained models and a template artifacts folder."""

    root: Path
    tables: Tables
    models: dict[str, Any]
    versions: dict[str, str]
    base: pd.DataFrame


def _settings(root: Path, **serving: Any) -> Settings:
    return load_settings(
        paths={"artifacts": str(root / "artifacts"), "data": str(root / "data")},
        training={"lightgbm": LGBM},
        serving=serving,
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("events-world")
    tables = generate_crm(n_customers=800, start="2023-01-01", end="2025-06-30", seed=11)
    settings = _settings(root)
    past = Tables(  # what the store holds: the history up to the store date
        transactions=history(tables.transactions, STORE_DATE),
        customers=tables.customers,
        surveys=history(tables.surveys, STORE_DATE),
        interactions=history(tables.interactions, STORE_DATE),
    )
    build_feature_store(past, STORE_DATE, settings.features, Path(settings.paths.artifacts))
    models = train_all(past, settings).models
    base = typed_features(read_offline(root / "artifacts" / "features", STORE_DATE))
    return World(root, past, models, {task: "1" for task in models}, base)


class Scorers:
    """Scorers over one private artifacts copy; ``restart`` makes a new one (replays events)."""

    def __init__(self, world: World, root: Path, **serving: Any) -> None:
        shutil.copytree(world.root / "artifacts", root / "artifacts")
        self.world = world
        self.settings = _settings(root, **serving)
        self.current = self._new()

    def _new(self) -> Scorer:
        w = self.world
        return Scorer(
            self.settings,
            OnlineStore(Path(self.settings.paths.artifacts) / "online.sqlite"),
            loader=lambda _: (w.models, w.versions),
            probe=lambda _: dict(w.versions),
        )

    def restart(self) -> Scorer:
        self.current.close()
        self.current = self._new()
        return self.current


@pytest.fixture()
def scorers(world: World, tmp_path: Path) -> Iterator[Callable[..., Scorers]]:
    made: list[Scorers] = []

    def make(**serving: Any) -> Scorers:
        made.append(Scorers(world, tmp_path / f"s{len(made)}", **serving))
        return made[-1]

    yield make
    for s in made:
        s.current.close()


def _buyers(world: World, n: int) -> list[str]:
    rows = world.base[world.base["recency_days"].notna()]
    return [str(c) for c in rows[ENTITY].iloc[:n]]


# -- the independent expectation ----------------------------------------------------------------


@dataclass
class Expected:
    """What the scores must be: the source data plus the accepted events, rebuilt."""

    world: World
    settings: Settings
    events: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)
    _thresholds: dict[str, float] = field(default_factory=dict)

    def add(self, cid: str, kind: str, event: dict[str, Any]) -> None:
        self.events.setdefault(cid, {"transactions": [], "interactions": []})[kind].append(event)

    def date(self) -> pd.Timestamp:
        days = [
            pd.Timestamp(e["timestamp"]).normalize()
            for ev in self.events.values()
            for kind in ev.values()
            for e in kind
        ]
        return max([STORE_DATE, *days])

    def thresholds(self) -> dict[str, float]:
        """The store population's value and potential thresholds at the store date."""
        if not self._thresholds:
            scores = score_all(self.world.models, self.world.base, self.settings)
            self._thresholds = score_thresholds(self.world.base, scores, self.settings)
        return self._thresholds

    def row(self, cid: str) -> pd.DataFrame:
        w = self.world
        received = self.events.get(cid)
        if not received:
            return w.base[w.base[ENTITY] == cid]
        parts = {}
        for name, frame in w.tables.items():
            mine = frame[frame[ENTITY] == cid]
            new = received.get(name, [])
            if new:
                extra = pd.DataFrame(new).assign(**{ENTITY: cid})
                extra["timestamp"] = pd.to_datetime(extra["timestamp"])
                mine = pd.concat([mine, extra], ignore_index=True)
            parts[name] = mine
        cutoff = self.date()  # a customer with events is rebuilt at the scoring date
        built = build_features(Tables(**parts), cutoff, self.settings.features)
        built = typed_features(built[built[ENTITY] == cid])
        population = Population.from_features(w.base, self.settings.features.abc.window_days)
        return population.place(built).reindex(columns=w.base.columns)

    def score(self, cid: str) -> dict[str, Any]:
        date = self.date()
        row = shift_to(self.row(cid).reset_index(drop=True), date)
        scores = score_all(self.world.models, row, self.settings, thresholds=self.thresholds())
        return scores.iloc[0].to_dict()


def _same(served: dict[str, Any], expected: dict[str, Any], date: pd.Timestamp) -> None:
    assert served["feature_date"] == date.date().isoformat(), served["customer_id"]
    for key in COMPARED:
        assert served[key] == pytest.approx(expected[key], rel=1e-9, abs=1e-12, nan_ok=True), key
    assert served["segments"]["value_potential"] == expected["value_potential"]
    assert served["recommended_action"] == expected["recommended_action"]


def _status(call: Callable[[], Any]) -> tuple[int, Any]:
    """The status the service maps a scorer call to (see ``Retentio._call``)."""
    try:
        return 200, call()
    except CustomerNotFoundError as exc:
        return 404, str(exc)
    except (ContractError, InsufficientDataError) as exc:
        return 400, str(exc)


# -- the reported defects, one by one -----------------------------------------------------------


def test_an_event_after_the_store_date_moves_every_score_to_that_day(
    world: World, scorers: Callable[..., Scorers]
) -> None:
    s = scorers()
    a, b = _buyers(world, 2)
    late = {"timestamp": "2025-07-20T12:00:00", "amount": 30.0}
    status, answer = _status(lambda: s.current.add_events(a, transactions=[late]))
    assert status == 200 and answer["n_transactions"] == 1
    expected = Expected(world, s.settings)
    expected.add(a, "transactions", late)
    for scorer in (s.current, s.restart()):
        for cid in (a, b):
            _same(scorer.score([cid])[0], expected.score(cid), pd.Timestamp("2025-07-20"))
        scorer.reload_if_changed()  # the bundle of the new date: the fast path, same numbers
        for cid in (a, b):
            _same(scorer.score([cid])[0], expected.score(cid), pd.Timestamp("2025-07-20"))


def test_wall_clock_starts_and_scores_today(world: World, scorers: Callable[..., Scorers]) -> None:
    scorer = scorers(clock="wall").current
    today = pd.Timestamp.now("UTC").tz_localize(None).normalize()
    a = _buyers(world, 1)[0]
    scorer.add_events(a, transactions=[{"timestamp": str(today), "amount": 12.5}])
    rows = scorer.score([a, _buyers(world, 2)[1]])
    assert {r["feature_date"] for r in rows} == {today.date().isoformat()}
    assert all(0 <= r["churn_probability"] <= 1 for r in rows)


def test_a_retried_post_is_a_no_op_and_says_so(
    world: World, scorers: Callable[..., Scorers]
) -> None:
    scorer = scorers().current
    a = _buyers(world, 1)[0]
    order = {"timestamp": "2025-07-02T10:00:00", "amount": 80.0, "order_id": "O-RETRY"}
    first = scorer.add_events(a, transactions=[order])
    before = scorer.score([a])[0]
    for _ in range(4):
        again = scorer.add_events(a, transactions=[order])
        assert again["n_transactions"] == 0 and again["n_duplicates"] == 1
        assert "ignored" in again["note"]
    assert first["n_duplicates"] == 0
    assert scorer.score([a])[0]["predicted_ltv"] == before["predicted_ltv"]
    lines = scorer.ledger.path.read_text().splitlines()
    assert len(lines) == 1


def test_an_order_already_in_the_store_is_a_duplicate(
    world: World, scorers: Callable[..., Scorers]
) -> None:
    scorer = scorers().current
    tx = world.tables.transactions
    line = tx[tx["order_id"].notna()].iloc[-1]
    event = {
        "timestamp": str(line["timestamp"]),
        "amount": float(line["amount"]),
        "order_id": str(line["order_id"]),
    }
    before = scorer.score([str(line[ENTITY])])[0]
    answer = scorer.add_events(str(line[ENTITY]), transactions=[event])
    assert answer["n_duplicates"] == 1 and answer["n_transactions"] == 0
    assert scorer.score([str(line[ENTITY])])[0] == before


def test_batch_rows_match_the_request_with_repeats_and_live_customers(
    world: World, scorers: Callable[..., Scorers]
) -> None:
    scorer = scorers().current
    a, b = _buyers(world, 2)
    scorer.add_events(b, transactions=[{"timestamp": "2025-06-20T09:00:00", "amount": 5.0}])
    for ids in ([a, a, b], [b, b], [b, a, b, a, a], [a]):
        rows = scorer.score(ids)
        assert [r["customer_id"] for r in rows] == ids
        singles = {c: scorer.score([c])[0] for c in set(ids)}
        for r in rows:
            assert r["churn_probability"] == singles[r["customer_id"]]["churn_probability"]


def test_dates_out_of_range_or_before_the_history_are_400_saying_why(
    world: World, scorers: Callable[..., Scorers]
) -> None:
    scorer = scorers().current
    a = _buyers(world, 1)[0]
    first = _history_start(world, a)
    assert first is not None
    cases = {
        "0001-01-01T00:00:00": "out of range",
        "0001-01-01T00:00:00+05:00": "out of range",
        "1500-06-01": "out of range",
        "2999-01-01": "in the future",
        "2262-05-01": "in the future",
        "2020-01-01": "event_max_age_days",
        "not a date": "is not a date",
    }
    if first - pd.Timedelta(days=2) > STORE_DATE - pd.Timedelta(days=730):
        cases[str(first - pd.Timedelta(days=2))] = "before customer"
    for when, why in cases.items():
        for kind, event in (
            ("transactions", {"timestamp": when, "amount": 1.0}),
            ("interactions", {"timestamp": when, "type": "visit"}),
        ):
            status, message = _status(lambda e=event, k=kind: scorer.add_events(a, **{k: [e]}))
            assert status == 400, (when, kind)
            assert why in message
            for internal in ("Timestamp", "OutOfBounds", "datetime64", "shift_to", "numpy"):
                assert internal not in message
    assert not scorer.ledger.path.exists()


def test_new_customers_from_events_are_listed_and_at_risk_logs_only_its_page(
    world: World, scorers: Callable[..., Scorers]
) -> None:
    s = scorers()
    scorer = s.current
    n_store = len(world.base)
    scorer.add_events("NEW-1", transactions=[{"timestamp": "2025-06-30T18:00:00", "amount": 9.0}])
    for sc in (scorer, s.restart()):
        listed = sc.at_risk(top=10_000, page_size=10_000, min_risk="low")
        ids = [r["customer_id"] for r in listed["items"]]
        assert listed["total"] == n_store + 1 == len(ids) == len(set(ids))
        assert "NEW-1" in ids
        where = ids.index("NEW-1")  # a page holding the live customer is that slice of the list
        page = sc.at_risk(top=10_000, page=where // 7 + 1, page_size=7, min_risk="low")
        start = (where // 7) * 7
        assert [r["customer_id"] for r in page["items"]] == ids[start : start + 7]
        values = [r["value_at_risk"] for r in listed["items"]]
        assert values == sorted(values, reverse=True)
    scorer = s.current
    log = scorer.log.path
    before = len(log.read_text().splitlines()) if log.exists() else 0
    scorer.at_risk(top=50, page_size=7)
    scorer.log.close()
    assert len(log.read_text().splitlines()) - before == 7


def test_a_store_rebuild_reload_swaps_one_state_and_closes_the_old_store_when_released(
    world: World, scorers: Callable[..., Scorers], monkeypatch: pytest.MonkeyPatch
) -> None:
    s = scorers()
    scorer = s.current
    a, b = _buyers(world, 2)
    scorer.add_events(a, transactions=[{"timestamp": "2025-07-03T10:00:00", "amount": 7.0}])
    old = scorer._state
    seen_during_build: list[object] = []
    prepare = Scorer._prepare
    during = {"timestamp": "2025-07-02T10:00:00", "amount": 3.0}

    def watching(self: Scorer, *args: Any, **kwargs: Any) -> Any:
        if not seen_during_build:  # an event received while the new state is built
            self.add_events(b, transactions=[during])
        seen_during_build.append(self._state)
        return prepare(self, *args, **kwargs)

    monkeypatch.setattr(Scorer, "_prepare", watching)
    path = Path(s.settings.paths.artifacts) / "online.sqlite"
    copy = path.with_suffix(".copy")
    shutil.copyfile(path, copy)
    copy.replace(path)  # a rebuilt store: a new file, new mtime
    with old.lease.hold() as held:  # a call still holding the old store
        assert scorer.reload_if_changed()
        assert seen_during_build == [old]  # requests kept the old state while it was built
        assert scorer._state is not old and not old.lease.closed
        assert len(held) == len(world.base)  # still usable
    assert old.lease.closed
    expected = Expected(world, s.settings)
    expected.add(a, "transactions", {"timestamp": "2025-07-03T10:00:00", "amount": 7.0})
    expected.add(b, "transactions", during)
    for cid in (a, b):
        _same(scorer.score([cid])[0], expected.score(cid), pd.Timestamp("2025-07-03"))


# -- the property: any sequence of events, restarts in between ----------------------------------

DAYS = [-900, -200, -30, -1, 0, 1, 3, 45]
CUSTOMERS = ["store-0", "store-1", "store-2", "NEW-A", "NEW-B"]

step = st.one_of(
    st.tuples(
        st.just("event"),
        st.sampled_from(CUSTOMERS),
        st.sampled_from(["transactions", "interactions"]),
        st.sampled_from(DAYS),
        st.integers(0, 23),
        st.sampled_from([19.5, 60.0, -10.0]),
    ),
    st.tuples(st.just("repeat")),
    st.tuples(st.just("restart")),
    st.tuples(st.just("reload")),
)


@hsettings(
    max_examples=6,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(step, min_size=1, max_size=5))
def test_any_event_sequence_serves_what_a_rebuild_from_source_gives(
    world: World, tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[Any, ...]]
) -> None:
    s = Scorers(world, tmp_path_factory.mktemp("prop"))
    expected = Expected(world, s.settings)
    store_ids = dict(zip(CUSTOMERS[:3], _buyers(world, 3), strict=True))
    last: tuple[str, dict[str, list[dict[str, Any]]]] | None = None
    try:
        for st_ in steps:
            scorer = s.current
            if st_[0] == "restart":
                before = {c: scorer.score([c])[0] for c in _known(expected, store_ids)}
                scorer = s.restart()
                for cid, row in before.items():
                    again = scorer.score([cid])[0]
                    assert {k: again[k] for k in COMPARED} == {k: row[k] for k in COMPARED}
            elif st_[0] == "reload":
                scorer.reload_if_changed()
            elif st_[0] == "repeat" and last is not None:
                status, answer = _status(lambda sc=scorer, lt=last: sc.add_events(lt[0], **lt[1]))
                assert status == 200 and answer["n_duplicates"] == sum(map(len, last[1].values()))
            elif st_[0] == "event":
                _, who, kind, day, hour, amount = st_
                cid = store_ids.get(who, who)
                when = STORE_DATE + pd.Timedelta(days=day, hours=hour)
                event = {"timestamp": when.isoformat(), "amount": amount}
                if kind == "interactions":
                    event = {"timestamp": when.isoformat(), "type": "complaint"}
                status, answer = _status(
                    lambda sc=scorer, c=cid, k=kind, e=event: sc.add_events(c, **{k: [e]})
                )
                first = _history_start(world, cid)
                has_purchase = cid in store_ids.values() or bool(
                    expected.events.get(cid, {}).get("transactions")
                )
                if day < -730:
                    assert status == 400 and "out of range" in answer
                elif first is not None and when < first:
                    assert status == 400 and "history" in answer
                elif not has_purchase and kind == "interactions":
                    assert status == 404
                else:
                    assert status == 200, answer
                    expected.add(cid, kind, event)
                    last = (cid, {kind: [event]})
            _check(s.current, expected, store_ids)
    finally:
        s.current.close()


def _history_start(world: World, cid: str) -> pd.Timestamp | None:
    stamps = [
        frame.loc[frame[ENTITY] == cid, "timestamp"].min()
        for frame in (world.tables.transactions, world.tables.interactions, world.tables.surveys)
        if frame is not None
    ]
    stamps = [t for t in stamps if pd.notna(t)]
    return min(stamps) if stamps else None


def _known(expected: Expected, store_ids: dict[str, str]) -> list[str]:
    news = [c for c, ev in expected.events.items() if ev["transactions"]]
    return list(dict.fromkeys([*store_ids.values(), *news]))


def _check(scorer: Scorer, expected: Expected, store_ids: dict[str, str]) -> None:
    ids = _known(expected, store_ids)
    date = expected.date()
    for cid in ids:
        status, rows = _status(lambda c=cid: scorer.score([c]))
        assert status == 200
        _same(rows[0], expected.score(cid), date)
    batch = [ids[-1], *ids, ids[0], ids[-1]]
    status, rows = _status(lambda: scorer.score(batch))
    assert status == 200 and [r["customer_id"] for r in rows] == batch
    status, listed = _status(lambda: scorer.at_risk(top=10_000, page_size=10, min_risk="low"))
    assert status == 200 and listed["total"] == len(expected.world.base) + len(
        [c for c in ids if c not in set(expected.world.base[ENTITY])]
    )
    assert _status(lambda: scorer.score(["NOBODY"]))[0] == 404
    assert np.isfinite([r["churn_probability"] for r in rows]).all()


def test_saved_live_rows_are_used_only_for_the_same_events(
    world: World, scorers: Callable[..., Scorers]
) -> None:
    s = scorers()
    a, b = _buyers(world, 2)
    first = {"timestamp": "2025-07-04T10:00:00", "amount": 11.0}
    s.current.add_events(a, transactions=[first])
    restarted = s.restart()  # a clean stop saves the live rows; the restart reads them back
    saved = Path(s.settings.paths.artifacts) / "live_state.json"
    assert saved.exists() and restarted._state.saved
    later = {"timestamp": "2025-07-05T10:00:00", "amount": 4.0}
    restarted.add_events(b, transactions=[later])
    crashed = s._new()  # no clean stop: the saved rows miss b's event, so all are rebuilt
    expected = Expected(world, s.settings)
    expected.add(a, "transactions", first)
    expected.add(b, "transactions", later)
    for scorer in (restarted, crashed):
        for cid in (a, b):
            _same(scorer.score([cid])[0], expected.score(cid), pd.Timestamp("2025-07-05"))
    crashed.close()


def test_history_joins_the_stored_rows_and_the_events_received(
    world: World, scorers: Callable[..., Scorers]
) -> None:
    s = scorers()
    scorer = s.current
    (cid,) = _buyers(world, 1)
    stored = scorer.history(cid)["transactions"]
    assert stored is not None and len(stored)
    scorer.add_events(
        cid,
        transactions=[{"timestamp": "2025-06-30T17:00:00", "amount": 12.5, "order_id": "H-1"}],
        interactions=[{"timestamp": "2025-06-30T17:05:00", "type": "complaint"}],
    )
    for restart in (False, True):  # the ledger replayed at start gives the same history
        sc = s.restart() if restart else scorer
        history = sc.history(cid)
        tx = history["transactions"]
        assert tx is not None and len(tx) == len(stored) + 1
        assert tx["timestamp"].is_monotonic_increasing
        last = tx.iloc[-1]
        assert last["order_id"] == "H-1" and last["amount"] == 12.5
        inter = history["interactions"]
        assert inter is not None and "complaint" in set(inter["type"])
        assert "key" not in tx.columns
    new = s.current.history("NOBODY-H")
    assert all(frame is None or frame.empty for frame in new.values())


def test_explain_gives_the_reasons_of_score_with_the_values_they_quote(
    world: World, scorers: Callable[..., Scorers]
) -> None:
    scorer = scorers().current
    items = scorer.at_risk(top=5, page_size=5)["items"]
    cid = _buyers(world, 1)[0]
    scorer.add_events(cid, transactions=[{"timestamp": "2025-06-30T16:00:00", "amount": 3.0}])
    items += scorer.score([cid])  # a live customer: reasons from its live score
    for rec in items:
        rows = scorer.explain(rec["customer_id"], n_reasons=3)
        assert [r["text"] for r in rows] == rec["reasons"], rec["customer_id"]
        assert all("value" in r and "typical" in r for r in rows)
    typical = {"recency_days": 1.0}
    quoted = scorer.explain(items[0]["customer_id"], typical=typical, n_reasons=5)
    assert len(quoted) >= len(items[0]["reasons"])
    assert scorer.explain("NOBODY-X") == []


def test_a_restart_with_events_rebuilds_and_scores_nothing(
    world: World, scorers: Callable[..., Scorers]
) -> None:
    s = scorers()
    ids = _buyers(world, 6)
    expected = Expected(world, s.settings)
    for i, cid in enumerate([*ids[:4], "NEW-R"]):
        event = {"timestamp": f"2025-07-0{1 + i}T10:00:00", "amount": 10.0 + i}
        s.current.add_events(cid, transactions=[event])
        expected.add(cid, "transactions", event)
    s.current.reload_if_changed()  # what the reload thread does: the bundle of the new date
    s.current.reload_if_changed()  # ... and, next time round, the live rows and scores saved
    before = {c: s.current.score([c])[0] for c in [*ids, "NEW-R"]}
    listed = s.current.at_risk(top=50)
    again = s.restart()
    counts = again.counts
    assert counts.rows_scored == 0 and counts.populations_read == 1
    assert counts.live_rows_built == 0 and counts.live_scored == 0
    assert again._state.base._loaded is None  # the store's rows were not read
    assert {c: again.score([c])[0] for c in before} == before
    assert again.at_risk(top=50) == listed
    for cid in before:
        _same(again.score([cid])[0], expected.score(cid), pd.Timestamp("2025-07-05"))
    # other model versions: the saved live scores are not theirs, so the live rows are scored
    s.current.close()
    w = s.world
    other = Scorer(
        s.settings,
        OnlineStore(Path(s.settings.paths.artifacts) / "online.sqlite"),
        loader=lambda _: (w.models, {t: "2" for t in w.versions}),
        probe=lambda _: {t: "2" for t in w.versions},
    )
    s.current = other
    assert other.counts.live_rows_built == 0 and other.counts.live_scored == 5
    for cid in before:
        _same(other.score([cid])[0], expected.score(cid), pd.Timestamp("2025-07-05"))


def test_a_start_reads_no_customer_of_the_saved_live_state(
    world: World, scorers: Callable[..., Scorers]
) -> None:
    """10,000 customers with events: a restart parses no event and makes no customer's row or
    score; they are read one by one when asked, and events written after the last save (a
    crash) are the only ones replayed."""
    s = scorers()
    ids = _buyers(world, 40)
    live = [*ids[:20], *(f"NEW{i:05d}" for i in range(10_000 - 20))]
    window = event_window(STORE_DATE, s.settings.serving.event_max_age_days)
    ledger = EventLedger(Path(s.settings.paths.artifacts) / "events.jsonl")
    sent: dict[str, dict[str, Any]] = {}
    for i, cid in enumerate(live):
        when = STORE_DATE + pd.Timedelta(days=1 + i % 5, hours=10)
        sent[cid] = {"timestamp": when.isoformat(), "amount": 5.0 + i % 50, "order_id": f"T{i}"}
        event = check_event(sent[cid], "transactions", 0, customer_id=cid, window=window)
        ledger.append(cid, [event], [])
    first = s.restart()  # nothing saved yet: every event replayed, rows built and scored once
    assert first.counts.events_replayed == len(live) == first.counts.live_rows_built
    asked = [ids[0], ids[25], "NEW00007", "NEW09000"]
    before = {c: first.score([c])[0] for c in asked}
    again = s.restart()  # a clean stop saved the live state
    counts = again.counts
    assert counts.events_replayed == 0 and counts.live_read == 0
    assert counts.live_rows_built == 0 and counts.live_scored == 0 and counts.rows_scored == 0
    assert len(again.live_customers) == len(live)
    assert {c: again.score([c])[0] for c in asked} == before
    assert again.counts.live_read == 3  # the scores of the three asked live customers only
    page = again.at_risk(top=20, page_size=20)
    assert again.counts.live_read <= 3 + 20 and len(page["items"]) == 20
    # events after the last save (no clean stop): only they are replayed and rebuilt
    late = {"timestamp": "2025-07-02T09:00:00", "amount": 33.0}
    again.add_events(ids[30], transactions=[late])
    again.add_events("NEW00011", transactions=[late])
    crashed = s._new()
    s.current = crashed
    assert crashed.counts.events_replayed == 2 == crashed.counts.live_rows_built
    assert crashed.counts.live_scored == 2 and crashed.counts.live_read == 1  # NEW00011's events
    expected = Expected(world, s.settings)
    expected.add(ids[30], "transactions", late)
    expected.add(ids[4], "transactions", sent[ids[4]])  # dated 2025-07-05, the latest day
    for cid in (ids[30], ids[31], ids[4]):
        _same(crashed.score([cid])[0], expected.score(cid), pd.Timestamp("2025-07-05"))
    assert crashed.score(["NEW00007"])[0] == before["NEW00007"]
    again.close()
