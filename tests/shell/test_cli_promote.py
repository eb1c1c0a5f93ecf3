"""What `models promote` prints: the gate's reason whole, brackets included."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import retentio.shell.jobs as jobs
from retentio.shell.cli import app
from retentio.training.gate import PromotionDecision


def test_the_gate_s_reason_is_printed_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def gate(tasks: Any, settings: Any, **_: Any) -> list[PromotionDecision]:
        return [
            PromotionDecision(
                task=task,
                promoted=False,
                reason="auc 0.7786 vs champion 0.7919 (worse; higher is better) "
                "[champion re-scored on snapshot 2024-06-30]",
                candidate_version="2",
                champion_version="1",
                candidate_metric=0.7786,
                champion_metric=0.7919,
            )
            for task in tasks
        ]

    monkeypatch.setattr(jobs, "promote_job", gate)
    config = tmp_path / "config.yaml"
    config.write_text(f"paths: {{artifacts: {tmp_path / 'a'}, data: {tmp_path / 'none'}}}\n")
    result = CliRunner().invoke(app, ["models", "promote", "churn", "--config", str(config)])
    assert result.exit_code == 1, result.output  # kept: the gate refused
    assert "[champion re-scored on snapshot 2024-06-30]" in result.output
