"""The output frame of a feature family (attitudinal, relational): one row per customer."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import numpy as np
import pandas as pd

from retentio.features.schema import ENTITY

__all__ = ["as_index", "family_frame"]


def as_index(customer_ids: pd.Index | Sequence[str]) -> pd.Index:
    """``customer_ids`` itself when it is an Index (its cached hash table is reused)."""
    return customer_ids if isinstance(customer_ids, pd.Index) else pd.Index(customer_ids)


def family_frame(
    customer_ids: pd.Index,
    names: Sequence[str],
    values: Mapping[str, np.ndarray],
    *,
    counts: Collection[str] = (),
) -> pd.DataFrame:
    """The family's frame from its computed columns, indexed by ``customer_id``.

    Parameters
    ----------
    customer_ids
        The customers, in output order.
    names
        The family's columns, in output order.
    values
        Computed columns (one value per customer); absent ones are filled.
    counts
        Columns filled with 0 (int64) when absent; the others are filled with NaN.

    Returns
    -------
    pandas.DataFrame
        ``names`` as columns, one row per customer.
    """
    n = len(customer_ids)
    columns = {
        name: values.get(name, np.zeros(n, dtype="int64") if name in counts else np.full(n, np.nan))
        for name in names
    }
    return pd.DataFrame(columns, index=as_index(customer_ids).rename(ENTITY), copy=False)
