"""Serving settings."""

from __future__ import annotations

from pydantic import Field

from longcot.models import DEFAULT_MODEL
from longcot.settings import StrictModel


class ServeConfig(StrictModel):
    """Serve a model (optionally with a LoRA adapter) behind an OpenAI-compatible API."""

    model: str = Field(DEFAULT_MODEL, description="Base or merged model reference.")
    adapter: str | None = Field(None, description="PEFT adapter directory to apply.")
    host: str = Field("127.0.0.1")
    port: int = Field(8000, ge=1, le=65535)
