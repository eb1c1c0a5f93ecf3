"""The floor: a BentoML service that returns a constant, served like the real one.

``bench/bench_serve.py`` measures it beside ``retentio.serving.service:Retentio`` (same BentoML
version, the same workers through ``BENTOML_CONFIG_OVERRIDES``, a sync API with a pydantic body)
and reports our latency and throughput as ratios to it.
"""

from __future__ import annotations

import bentoml
from pydantic import BaseModel, ConfigDict

_CONSTANT = {"customer_id": "C0000042", "churn_probability": 0.5, "risk_band": "medium"}


class BareRequest(BaseModel):
    """The same body shape as ``POST /score`` (only the id)."""

    model_config = ConfigDict(extra="forbid")

    customer_id: str


@bentoml.service(name="bare", workers=1, threads=1)
class Bare:
    """Answers every ``POST /score`` with the same small dict."""

    @bentoml.api(route="/score", input_spec=BareRequest)
    def score(self, customer_id: str) -> dict:
        """A constant score (the id is ignored)."""
        return _CONSTANT
