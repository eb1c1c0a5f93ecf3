"""The one reader of the scored population for the pages: :class:`Workspace`.

Every page reads the scored population through :meth:`Workspace.view`, which returns a
:class:`PopulationView` made once per scored population (the persisted population the scorer
serves, :class:`serving.population.PersistedPopulation`: new champions, a rebuilt store or a
new scoring date give a new one) and cached. What the pages show of the whole population (the
KPI tiles, the matrices, the distributions) and its order by each sortable column are the page
data written beside the population when it was scored (:mod:`serving.page_data`): a view reads
that file and computes nothing; only a population without valid page data (written by an older
version, or rewritten by an erasure) has it computed here once, from the store's feature rows,
and written for the next start. A page request then only filters, sorts and slices arrays it
already holds. Customers whose events arrived since count in the tiles with their persisted
scores; the at-risk list and the customer card show their live scores (through
:meth:`serving.scorer.Scorer.at_risk` and ``score``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from retentio.errors import RetentioError
from retentio.features.schema import ENTITY
from retentio.serving.atrisk import AtRiskFilters
from retentio.serving.page_data import (
    SORTS,
    Kpi,
    MatrixCell,
    PageData,
    PageTotals,
    compute_page_table,
    page_data,
    read_page_data,
    write_page_data,
)
from retentio.serving.population import first_kept
from retentio.serving.reasons import Reason

logger = logging.getLogger(__name__)

__all__ = [
    "SORTS",
    "Kpi",
    "MatrixCell",
    "NotReadyError",
    "PopulationView",
    "Workspace",
    "WorkspaceCounts",
]


class NotReadyError(RetentioError):
    """The models are not loaded yet (the pages say so and retry)."""


CARD_FEATURES = (
    "loyalty_segment",
    "recency_days",
    "frequency",
    "n_orders",
    "monetary_value",
    "T_days",
    "r_score",
    "f_score",
    "m_score",
    "rfm_note",
    "rfm_note_r",
    "rfm_note_f",
    "rfm_note_m",
)
"""The feature values the customer card shows."""


@dataclass
class PopulationView:
    """The scored population at one scoring date, with what the pages show of it."""

    population: Any  # serving.population.PersistedPopulation
    date: pd.Timestamp
    versions: dict[str, str]
    data: PageData

    @property
    def totals(self) -> PageTotals:
        return self.data.totals

    @property
    def kpis(self) -> list[Kpi]:
        return self.data.totals.kpis

    @property
    def matrices(self) -> dict[str, list[list[MatrixCell]]]:
        return self.data.totals.matrices

    @property
    def histograms(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        return self.data.totals.histograms

    @property
    def actions(self) -> list[str]:
        return self.data.totals.actions

    @property
    def typical(self) -> dict[str, float]:
        return self.data.totals.typical

    def ids(self, positions: np.ndarray) -> list[str]:
        """Customer ids at population ``positions``."""
        if not len(positions):
            return []
        column = self.population.column(ENTITY)
        return [str(c) for c in column.take(pa.array(positions, pa.int64())).to_pylist()]

    def mask(self, filters: AtRiskFilters, *, loyalty: str | None = None) -> np.ndarray:
        """Which population rows (file order) the filters keep (the at-risk list's one rule)."""
        mask = self.population.mask(filters)
        if loyalty:
            mask &= self.data.loyalty_mask(loyalty)
        return mask

    def ordered_positions(
        self,
        filters: AtRiskFilters,
        *,
        sort: str,
        ascending: bool,
        loyalty: str | None = None,
        n: int | None = None,
    ) -> tuple[np.ndarray, int]:
        """Population row positions the filters keep, ordered by ``sort`` (unknown values last;
        ties in the at-risk order), the first ``n`` of them (all when None), and how many the
        filters keep: one mask and a scan of the order persisted beside the population as far
        as the page needs."""
        order = self.data.order(sort, ascending=ascending)
        mask = self.mask(filters, loyalty=loyalty)
        total = int(np.count_nonzero(mask))
        return first_kept(order, mask, total if n is None else n), total


@dataclass
class WorkspaceCounts:
    """Work done by a :class:`Workspace` (what a restart with persisted page data skips)."""

    page_data_read: int = 0  # page data read from the file beside the population
    page_data_built: int = 0  # page data computed here (none beside the population)


class Workspace:
    """The pages' access to the scored population (see the module docstring).

    Parameters
    ----------
    scorer
        Returns the service's current :class:`serving.scorer.Scorer` (``None`` while loading).
    """

    def __init__(self, scorer: Callable[[], Any]) -> None:
        self._scorer = scorer
        self._lock = threading.Lock()
        self._key: int | None = None
        self._view: PopulationView | None = None
        self.counts = WorkspaceCounts()

    def scorer(self) -> Any:
        """The current scorer; :class:`NotReadyError` while the models load."""
        scorer = self._scorer()
        if scorer is None or not scorer.ready:
            raise NotReadyError("the models are loading; this page refreshes when they are")
        return scorer

    def view(self, scorer: Any = None) -> PopulationView:
        """The current scored population (made once per scoring, then cached); ``scorer``: the
        one to read (default: the service's current one)."""
        scorer = scorer if scorer is not None else self.scorer()
        bundle = scorer._bundle  # the one place that reads the scorer's scored population
        with self._lock:
            if self._key != id(bundle) or self._view is None:
                data = self._page_data(scorer, bundle.population)
                self._view = PopulationView(
                    bundle.population, bundle.date, dict(bundle.versions), data
                )
                self._key = id(bundle)
            return self._view

    def _page_data(self, scorer: Any, pop: Any) -> PageData:
        """The page data persisted beside ``pop``; computed and written when it has none."""
        data = read_page_data(pop)
        if data is not None:
            self.counts.page_data_read += 1
            return data
        from retentio.serving.population import population_lock
        from retentio.serving.scorer import shift_to

        with population_lock(pop.path.parent):  # one worker computes, the others read it
            data = read_page_data(pop)
            if data is not None:
                self.counts.page_data_read += 1
                return data
            features = shift_to(scorer.store_features(), pop.feature_date)
            self.counts.page_data_built += 1
            try:
                write_page_data(pop.path, features, scorer.settings)
                data = read_page_data(pop)
            except OSError as exc:  # a read-only folder: this process keeps its own copy
                logger.warning("page data not written (%s); kept in memory", exc)
                data = page_data(compute_page_table(pop, features, scorer.settings), pop)
        if data is None:
            raise RetentioError(f"the page data written beside {pop.path} did not read back")
        return data

    def features(self, customer_id: str) -> dict[str, Any] | None:
        """The features the customer card shows, at the scoring date (None when unknown)."""
        row: dict[str, Any] | None = self.scorer().feature_row(customer_id, CARD_FEATURES)
        return row

    def reasons(self, customer_id: str, n_reasons: int = 5) -> list[Reason]:
        """The customer's risk-raising reasons with its value and the typical one."""
        view = self.view()
        reasons: list[Reason] = self.scorer().explain(
            customer_id, typical=view.typical, n_reasons=n_reasons
        )
        return reasons

    def history(self, customer_id: str) -> dict[str, pd.DataFrame | None]:
        """The customer's raw transactions, surveys and interactions (store + live events)."""
        history: dict[str, pd.DataFrame | None] = self.scorer().history(customer_id)
        return history
