"""Fine-tuning settings."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from longcot.models import DEFAULT_MODEL
from longcot.settings import StrictModel


class TrainConfig(StrictModel):
    """Fine-tune the student on the curated traces."""

    model: str = Field(DEFAULT_MODEL, description="Student: embedded:NAME, a hub id, or a local path.")
    mode: Literal["lora", "full"] = Field("lora", description="LoRA adapters or full fine-tuning.")
    num_workers: int = Field(2, ge=1, description="Ray Train workers.")
    use_gpu: bool = Field(False, description="One GPU per worker.")
