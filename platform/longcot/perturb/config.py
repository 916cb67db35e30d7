"""Perturbation settings."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from longcot.settings import StrictModel

PerturbKind = Literal[
    "wrong_answer", "corrupt_digits", "remove_keywords", "delete_steps", "insert_steps", "shuffle_steps"
]


class PerturbConfig(StrictModel):
    """Corrupt the content or the structure of traces at a ratio, deterministically per (seed, id)."""

    kind: PerturbKind = Field(..., description="Which perturbation.")
    ratio: float = Field(1.0, ge=0, le=1, description="Share of steps, numbers or keywords affected.")
    seed: int = Field(0, description="Seed; the same (seed, record id) always gives the same output.")
