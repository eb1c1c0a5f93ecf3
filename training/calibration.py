"""Probability calibration: Platt or isotonic, chosen by cross-fitted log loss."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

__all__ = ["Calibrator", "logit"]


def logit(p: np.ndarray) -> np.ndarray:
    """``log(p / (1 - p))`` of probabilities clipped to ``[1e-6, 1 - 1e-6]``, as one column."""
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p)).reshape(-1, 1)


class Calibrator:
    """Platt (logistic on the logit) or isotonic map of scores to probabilities.

    ``fit`` chooses between the two by 2-fold cross-fitted log loss on the calibration rows,
    so isotonic's in-sample advantage does not decide. With a single class in ``y`` it stays
    ``none`` (the identity).

    Parameters
    ----------
    seed
        Seed of the fold split.

    Attributes
    ----------
    method : str
        ``platt``, ``isotonic`` or ``none``.
    cv_log_loss : dict[str, float]
        Cross-fitted log loss per method (after ``fit`` on two classes).
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.method = "none"
        self._model: Any = None

    def _fit_one(self, method: str, p: np.ndarray, y: np.ndarray) -> Any:
        if method == "platt":
            return LogisticRegression(C=1e4).fit(logit(p), y)
        return IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p, y)

    @staticmethod
    def _apply(method: str, model: Any, p: np.ndarray) -> np.ndarray:
        if method == "platt":
            return model.predict_proba(logit(p))[:, 1]
        return np.clip(model.predict(p), 0.0, 1.0)

    def fit(self, p: np.ndarray, y: np.ndarray) -> Calibrator:
        """Choose the method and fit it on scores ``p`` and binary labels ``y``; return self."""
        p, y = np.asarray(p, float), np.asarray(y, float)
        if len(np.unique(y)) < 2:
            return self
        fold = np.random.default_rng(self.seed).random(len(y)) < 0.5
        losses = {}
        for method in ("platt", "isotonic"):
            loss = 0.0
            for test in (fold, ~fold):
                if len(np.unique(y[~test])) < 2:
                    loss = np.inf
                    break
                q = self._apply(method, self._fit_one(method, p[~test], y[~test]), p[test])
                q = np.clip(q, 1e-6, 1 - 1e-6)
                loss -= float(np.sum(y[test] * np.log(q) + (1 - y[test]) * np.log(1 - q)))
            losses[method] = loss
        self.method = min(losses, key=losses.__getitem__)
        self.cv_log_loss = {k: v / len(y) for k, v in losses.items()}
        self._model = self._fit_one(self.method, p, y)
        return self

    def predict(self, p: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of scores ``p``."""
        if self.method == "none":
            return np.asarray(p, float)
        return self._apply(self.method, self._model, np.asarray(p, float))
