"""Verification and curation settings."""

from __future__ import annotations

from pydantic import Field

from longcot.settings import StrictModel


class VerifyConfig(StrictModel):
    """Check each sample's final answer; optionally keep only correct ones."""

    timeout_s: float = Field(5.0, gt=0, description="Per-item timeout of a math check.")
    workers: int | None = Field(None, ge=1, description="Verifier processes (default: CPU count).")
    keep_correct_only: bool = Field(False, description="Drop (to rejected) every sample that is not correct.")
