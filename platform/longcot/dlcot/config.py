"""DLCoT settings."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from longcot.models import DEFAULT_MODEL
from longcot.settings import StrictModel


class DlcotConfig(StrictModel):
    """Segment, simplify and optimise the error states of long CoT traces."""

    segmenter: Literal["rules", "llm"] = Field("rules", description="How the thought is segmented.")
    tokenizer: str = Field(DEFAULT_MODEL, description="Student model whose tokenizer counts tokens.")
