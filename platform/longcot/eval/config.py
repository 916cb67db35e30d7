"""Evaluation settings."""

from __future__ import annotations

from pydantic import Field

from longcot.settings import StrictModel


class EvalConfig(StrictModel):
    """Evaluate one or more models on registry benchmarks."""

    benchmarks: list[str] = Field(default_factory=lambda: ["gsm8k"], description="Registry names.")
    limit: int | None = Field(None, ge=1, description="Problems per benchmark.")
