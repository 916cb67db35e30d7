"""Evaluation settings: which variants (models, or saved responses) are scored on which benchmarks."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from longcot.generate.config import GenerateConfig
from longcot.models import DEFAULT_MODEL
from longcot.settings import StrictModel
from longcot.verify.config import VerifyConfig

STUDENT = "@student"  # a model entry that stands for the student the job's train stage produced


class ModelEntry(StrictModel):
    """One model to evaluate: it generates answers to every benchmark problem, which are then verified."""

    name: str = Field(..., pattern=r"^[A-Za-z0-9._-]+$", description="Column name in the report, e.g. base or student.")
    model: str = Field(
        DEFAULT_MODEL,
        description="embedded:NAME, a hub id, a local path, or `@student`: the student trained earlier in the job.",
    )
    adapter: str | None = Field(None, description="A PEFT adapter directory applied to the model.")
    revision: str | None = Field(
        None, description="The model's revision (hub commit), recorded in the manifest (found in the local "
        "Hugging Face cache when not given)."
    )
    generate: dict[str, Any] = Field(
        default_factory=dict,
        description="Overrides of eval.generate for this model only, e.g. {backend: openai, ...} for a served model.",
    )


class ResponsesEntry(StrictModel):
    """Saved responses to re-score without generating (a longcot record file or a JSONL of responses)."""

    name: str = Field(..., pattern=r"^[A-Za-z0-9._-]+$", description="Column name in the report; entries may share one.")
    path: str = Field(..., description="JSONL or Parquet file with at least problem and response columns.")
    benchmark: str | None = Field(
        None, description="Benchmark of every row; default: the row's `benchmark` column or `benchmark:NAME` source."
    )


class EvalConfig(StrictModel):
    """Evaluate models (generated now) or saved responses (re-scored) on registry benchmarks, side by side."""

    benchmarks: list[str] = Field(
        default_factory=lambda: ["gsm8k"], min_length=1,
        description="Registry benchmarks the models answer (saved responses say their own benchmark).",
    )
    limit: int | None = Field(None, ge=1, description="Problems per benchmark (the first ones, in file order).")
    benchmark_dirs: list[str] = Field(
        default_factory=list, description="Extra registry directories (besides $LONGCOT_BENCHMARK_PATH)."
    )
    models: list[ModelEntry] | None = Field(
        None, description="Models to evaluate; default: the embedded model alone, unless `responses` are given."
    )
    responses: list[ResponsesEntry] = Field(
        default_factory=list, description="Saved responses to re-score without generating (dataset variants)."
    )
    generate: GenerateConfig = Field(
        default_factory=GenerateConfig,
        description="How every model generates (backend, sampling: n, temperature, max_tokens, seed). "
        "Its `model` is replaced by each entry's.",
    )
    verify: VerifyConfig = Field(
        default_factory=VerifyConfig,
        description="How answers are checked (timeout_s, workers, sandbox limits); its curation and export "
        "settings do not apply here: every sample is scored.",
    )
    k: list[int] = Field(
        default_factory=lambda: [1, 2, 4, 8, 16, 32, 64],
        description="pass@k values to report; those above the samples per problem (generate.sampling.n) are skipped.",
    )
    token_counter: str | None = Field(
        None,
        description="Tokenizer that counts tokens rows lack (saved responses): default the variant's model (for "
        "a name an OpenAI-compatible server gives its model, no hub id or path, the embedded model), else the "
        "embedded model.",
    )
    charts: bool = Field(True, description="Write PNG charts of accuracy against tokens.")

    @field_validator("k")
    @classmethod
    def _positive_k(cls, value: list[int]) -> list[int]:
        if any(k < 1 for k in value):
            raise ValueError("every k must be >= 1")
        return sorted(set(value))

    @model_validator(mode="after")
    def _unique_model_names(self) -> "EvalConfig":
        names = [m.name for m in self.models or []]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"models: duplicate names {duplicated}")
        clash = sorted(set(names) & {r.name for r in self.responses})
        if clash:
            raise ValueError(f"names used by both models and responses: {clash}")
        return self

    def model_entries(self) -> list[ModelEntry]:
        """The models to generate with: as configured, else the embedded model unless responses are given."""
        if self.models is not None:
            return list(self.models)
        return [] if self.responses else [ModelEntry(name="base")]
