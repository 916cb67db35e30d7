"""Teacher rollout settings."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from longcot.models import DEFAULT_MODEL
from longcot.settings import StageResources, StrictModel


class SamplingConfig(StrictModel):
    """Sampling parameters; part of the output's identity (a change starts a new output)."""

    n: int = Field(1, ge=1, description="Samples per problem.")
    temperature: float = Field(0.0, ge=0, description="0 means greedy decoding.")
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(512, ge=1, description="Maximum new tokens per sample.")
    seed: int = Field(0, description="Base seed; each sample derives its own from it and its id.")


class GenerateConfig(StrictModel):
    """Teacher rollouts through one of the backends: hf, vllm or openai."""

    backend: Literal["hf", "vllm", "openai"] = Field("hf", description="Which backend generates.")
    model: str = Field(DEFAULT_MODEL, description="embedded:NAME, a hub id, or a local path.")
    markers: Literal["sky", "think"] = Field("think", description="Thought/solution marker convention asked for.")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    batch_size: int = Field(8, ge=1, description="Prompts per batch sent to the backend.")
    concurrency: int = Field(1, ge=1, description="Replicas (actors) generating in parallel.")
    resources: StageResources = Field(default_factory=StageResources)
