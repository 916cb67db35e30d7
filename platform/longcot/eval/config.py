"""Evaluation settings: which variants (models, or saved responses) are scored on which benchmarks."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from longcot.generate.config import GenerateConfig
from longcot.models import DEFAULT_MODEL
from longcot.records import Lineage
from longcot.settings import StrictModel
from longcot.verify.config import VerifyConfig

STUDENT = "@student"  # a model entry that stands for the student the job's train stage produced
HELDOUT_RECORDS = "@heldout"  # the held-out records of the job's train stage (train.heldout)


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


class HeldoutEval(StrictModel):
    """Problems the student never trained on, with the teacher's traces of them. Every model variant answers the
    problems (scored as the benchmark `heldout`: pass@1, tokens, structure_rate) and is scored on the traces
    (heldout_nll); every other variant is compared with the baseline, paired, with bootstrap CIs."""

    records: str = Field(
        HELDOUT_RECORDS, description="Held-out teacher traces: a record file, or `@heldout` for the records the job's "
        "train stage held out (train.heldout).",
    )
    limit: int | None = Field(None, ge=1, description="Use at most this many held-out problems (the first ones).")
    answer: bool = Field(True, description="Every model variant answers the held-out problems.")
    nll: bool = Field(True, description="Score the teacher traces under every model variant whose weights load here.")
    cutoff_len: int | None = Field(
        None, ge=16, description="Tokens of a trace scored (prompt + response); default: the student's training "
        "cutoff_len (from its card), else 4096.",
    )
    baseline: str | None = Field(
        None, description="The variant every other one is compared with; default: the first model variant.",
    )
    resamples: int = Field(2000, ge=100, description="Bootstrap resamples of the 95% confidence intervals.")
    seed: int = Field(0, description="Bootstrap seed.")


class EvalConfig(StrictModel):
    """Evaluate models (generated now) or saved responses (re-scored) on registry benchmarks, side by side."""

    benchmarks: list[str] = Field(
        default_factory=lambda: ["gsm8k"],
        description="Registry benchmarks the models answer (saved responses say their own benchmark); [] with heldout "
        "evaluates on the held-out problems alone.",
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
    models_at_once: int | None = Field(
        None, ge=1, description="Model variants that generate (and score the held-out traces) at the same time, "
        "each with its own workers (generate.resources); Ray starts as many of them as the cluster has room for. "
        "null: every variant at once. Set 1 where two models do not fit in memory together (Ray schedules on "
        "CPUs and GPUs, not on memory).",
    )
    verify: VerifyConfig = Field(
        default_factory=VerifyConfig,
        description="How answers are checked, on Ray as the verify stage checks them (timeout_s, workers, sandbox, "
        "actors, resources, batch_size); its other settings (tokenizer: see token_counter; curation, export) do "
        "not apply here: every sample is scored.",
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
    heldout: HeldoutEval | None = Field(None, description=HeldoutEval.__doc__)
    prompt: Literal["student", "generate"] = Field(
        "student", description="student: when a model variant is a longcot student (its card, longcot_student.json, "
        "beside its weights), every model variant is prompted as that student was trained (system turn, instruction, "
        "chat template), so base and student answer the same prompt; generate: eval.generate's own prompt.",
    )
    structure_markers: Literal["auto", "sky", "think"] = Field(
        "auto", description="The thought-marker convention structure_rate looks for: auto is the student's (its "
        "card), else sky.",
    )

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

    def evaluates_nothing(self) -> bool:
        """No benchmark, no held-out problems and no saved responses (a sweep sets its held-out problems)."""
        return not self.benchmarks and self.heldout is None and not self.responses

    def model_entries(self) -> list[ModelEntry]:
        """The models to generate with: as configured, else the embedded model unless responses are given."""
        if self.models is not None:
            return list(self.models)
        return [] if self.responses else [ModelEntry(name="base")]


class EvalLineage(Lineage, stage="eval"):
    """Which evaluated variant scored a record, and whose tokenizer counted its tokens."""

    variant: str = Field(description="The evaluated model or response set the record belongs to.")
    token_counter: str | None = Field(None, description="The tokenizer that counted missing token counts.")
