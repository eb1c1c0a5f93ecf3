"""``CategoricalCaster``: the scikit-learn transformer that ships inside every LightGBM pipeline."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from pandas.api.types import is_bool_dtype, is_numeric_dtype
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from retentio.errors import ContractError

__all__ = ["CategoricalCaster"]


def _is_categorical_like(series: pd.Series) -> bool:
    return not is_numeric_dtype(series) and not is_bool_dtype(series)


class CategoricalCaster(TransformerMixin, BaseEstimator):
    """Cast string/categorical columns to the categories seen in ``fit`` (unseen -> NaN).

    LightGBM reads pandas ``category`` columns natively but maps codes by position; fixing the
    categories at fit time keeps the codes identical between training and scoring frames.

    Parameters
    ----------
    columns
        Columns to cast; ``None`` means every non-numeric, non-bool column of the fit frame.

    Attributes
    ----------
    categories_ : dict[str, pandas.Index]
        Sorted categories per cast column (empty for NumPy input, which passes through).
    n_features_in_ : int
    feature_names_in_ : numpy.ndarray
        Only when fitted on a DataFrame.
    """

    def __init__(self, columns: Sequence[str] | None = None) -> None:
        self.columns = columns

    def fit(self, X: Any, y: Any = None) -> CategoricalCaster:
        """Learn the categories of the string/categorical columns of ``X``.

        Parameters
        ----------
        X
            A DataFrame (or an array, which has no categorical columns and passes through).
        y
            Ignored.

        Returns
        -------
        CategoricalCaster
            self.
        """
        if not isinstance(X, pd.DataFrame):
            validate_data(self, X, dtype=None, ensure_all_finite="allow-nan")
            self.categories_: dict[str, pd.Index] = {}
            return self
        if X.shape[0] == 0:
            raise ValueError("CategoricalCaster: 0 sample(s) given, at least 1 is required")
        self.n_features_in_ = X.shape[1]
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        cols = (
            list(self.columns)
            if self.columns is not None
            else [c for c in X.columns if _is_categorical_like(X[c])]
        )
        self.categories_ = {}
        for col in cols:
            values = pd.unique(X[col].dropna().astype(object).to_numpy())
            self.categories_[col] = pd.Index(sorted(values, key=str), dtype=object)
        return self

    def transform(self, X: Any) -> Any:
        """Cast the learned columns to ``category`` with the fitted categories.

        Parameters
        ----------
        X
            A DataFrame with the fit columns, or an array when fitted on one.

        Returns
        -------
        pandas.DataFrame or numpy.ndarray
            A new frame with the cast columns (values not seen in fit become NaN); the other
            columns share ``X``'s data (``X`` itself is left as it was).

        Raises
        ------
        ContractError
            A column cast in fit is missing from ``X``.
        """
        check_is_fitted(self, "categories_")
        if not isinstance(X, pd.DataFrame):
            return validate_data(self, X, dtype=None, ensure_all_finite="allow-nan", reset=False)
        missing = [c for c in self.categories_ if c not in X.columns]
        if missing:
            raise ContractError(
                f"CategoricalCaster: columns {missing} seen in fit are missing from the frame "
                "to transform; build features with the same customers table as in training"
            )
        out = X.copy(deep=False)  # cast columns are replaced, the others shared (no data copy)
        for col, cats in self.categories_.items():
            values = out[col]
            if isinstance(values.dtype, pd.CategoricalDtype):  # recode, no string round trip
                out[col] = values.cat.set_categories(cats)
            else:
                out[col] = pd.Categorical(values.astype(object), dtype=pd.CategoricalDtype(cats))
        return out

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Names of the output columns (the input's, unchanged)."""
        check_is_fitted(self, "n_features_in_")
        if hasattr(self, "feature_names_in_"):
            return np.asarray(self.feature_names_in_, dtype=object)
        if input_features is not None:
            return np.asarray(input_features, dtype=object)
        return np.asarray([f"x{i}" for i in range(self.n_features_in_)], dtype=object)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.input_tags.categorical = True
        tags.input_tags.string = True
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags
