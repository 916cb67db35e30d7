"""Settings of a structure-vs-content sweep: the grid of dataset variants and how each is trained and scored."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from longcot.dlcot.config import DlcotConfig, TraceFields
from longcot.eval.config import EvalConfig
from longcot.generate.config import backend_class
from longcot.perturb.config import PerturbConfig, PerturbKind
from longcot.settings import StageResources, StrictModel
from longcot.train.config import TrainConfig
from longcot.verify.config import VerifyConfig

# Li et al. 2025 evaluate on these four math benchmarks (the reference figures average over them).
PAPER_BENCHMARKS = ["math500", "aime24", "amc23", "olympiadbench"]


class GridEntry(StrictModel):
    """One perturbation of the grid, at one or more ratios (one variant per ratio)."""

    kind: PerturbKind = Field(..., description="The perturbation (see the perturb stage).")
    name: str | None = Field(
        None, pattern=r"^[A-Za-z0-9._-]+$", description="Name of these variants (default: the kind), e.g. when one "
        "kind appears twice with different settings. Variants are called NAME-PERCENT.",
    )
    ratios: list[float] = Field(..., min_length=1, description="Ratios to run, each in 0..1; one variant each.")
    settings: dict[str, Any] = Field(
        default_factory=dict,
        description="Other perturb settings for these variants, e.g. {replace_answers: true} or {max_number: 9}.",
    )

    @field_validator("ratios")
    @classmethod
    def _in_unit_interval(cls, value: list[float]) -> list[float]:
        bad = [r for r in value if not 0 <= r <= 1]
        if bad:
            raise ValueError(f"ratios must lie in 0..1, got {bad}")
        if len(set(value)) != len(value):
            raise ValueError(f"duplicate ratios in {value}")
        return value

    @model_validator(mode="after")
    def _valid_settings(self) -> "GridEntry":
        for key in ("kind", "ratio"):
            if key in self.settings:
                raise ValueError(f"settings.{key}: set by the grid entry itself")
        for ratio in self.ratios:  # a bad setting fails at load time, naming the field
            PerturbConfig.model_validate({**self.settings, "kind": self.kind, "ratio": ratio})
        if self.kind == "wrong_answer" and not self.settings.get("replace_answers") and len(self.ratios) > 1:
            raise ValueError("wrong_answer uses the rejected traces as they are: ratios only matter with "
                             "settings.replace_answers")
        return self

    def variant_name(self, ratio: float) -> str:
        """``shuffle_steps-67``; the plain wrong-answer variant (rejected traces as they are) has no ratio."""
        name = self.name or self.kind
        if self.kind == "wrong_answer" and not self.settings.get("replace_answers"):
            return name
        return f"{name}-{round(100 * ratio):d}"

    def perturb_config(self, ratio: float, seed: int) -> PerturbConfig:
        return PerturbConfig.model_validate({"seed": seed, **self.settings, "kind": self.kind, "ratio": ratio})


def paper_grid() -> list[GridEntry]:
    """The ratios Li et al. 2025 ran for each perturbation."""
    return [
        GridEntry(kind="wrong_answer", ratios=[1.0]),
        GridEntry(kind="corrupt_digits", ratios=[0.2, 0.5, 0.7, 1.0]),
        GridEntry(kind="remove_keywords", ratios=[0.2, 0.5, 1.0]),
        GridEntry(kind="shuffle_steps", ratios=[0.33, 0.67, 1.0]),
        GridEntry(kind="delete_steps", ratios=[0.33, 0.67, 1.0]),
        GridEntry(kind="insert_steps", ratios=[0.33, 0.67, 1.0]),
    ]


class SweepHeldout(StrictModel):
    """Problems held out of every variant's training: clean (correct, unperturbed) teacher traces on which each
    variant's student is measured (heldout_nll, and structure_rate of its answers)."""

    problems: int = Field(16, ge=1, description="How many problems to hold out, among those with a correct trace.")
    seed: int = Field(0, description="Which problems (a hash of this seed and the problem text orders them).")


class SweepConfig(StrictModel):
    """A structure-vs-content ablation (Li et al. 2025): for each dataset variant (every perturbation x ratio of
    the grid, the unperturbed traces and the DLCoT-simplified ones) train a student and evaluate it, then
    tabulate every variant side by side with the paper's published figures.

    Each variant is an independent Ray task; a failed variant is reported and the others go on; finished
    variants are kept in `cache_dir` and skipped when the sweep runs again.
    """

    input: str | None = Field(
        None, description="Traces to build the variants from when no earlier stage of the job feeds the sweep: a "
        "longcot record file or a raw trace file (see input_fields); records without a verdict are verified first.",
    )
    input_fields: TraceFields = Field(
        default_factory=TraceFields, description="Columns of a raw trace input (problem, reference_answer and "
        "response, such as jobs/data/traces/*.jsonl); a longcot record file is recognised and read as it is.",
    )
    limit: int | None = Field(
        None, ge=1, description="Train each variant on at most this many records (the paper used about 5k).",
    )
    heldout: SweepHeldout | None = Field(
        None, description="Hold problems out of every variant and measure each student on their clean teacher traces "
        "(the table gains heldout_nll and structure_rate with 95% CIs); null: benchmarks only.",
    )
    seed: int = Field(0, description="Perturbation seed of every variant (a grid entry's settings may override it).")
    grid: list[GridEntry] = Field(default_factory=paper_grid, description="Perturbations x ratios; default: the paper's.")
    unperturbed: bool = Field(True, description="Include the variant trained on the correct traces as they are.")
    base: bool = Field(True, description="Include the student before training (evaluated only).")
    dlcot: DlcotConfig | None = Field(
        default_factory=DlcotConfig, description="The DLCoT variant's settings; null leaves the variant out.",
    )
    verify: VerifyConfig = Field(
        default_factory=VerifyConfig, description="How records that arrive without a verdict are verified.",
    )
    train: TrainConfig = Field(default_factory=TrainConfig, description="How every variant's student is trained.")
    eval: EvalConfig = Field(
        default_factory=lambda: EvalConfig(benchmarks=list(PAPER_BENCHMARKS)),
        description="Benchmarks and generation settings of every variant's evaluation (models are set by the sweep).",
    )
    resources: StageResources = Field(
        default_factory=lambda: StageResources(num_cpus=0),
        description="What one variant's own task asks Ray for. It only drives its stages (perturb, train, eval), "
        "which ask for their own resources, so the default is no CPU; add a custom resource to place variants.",
    )
    max_concurrent: int = Field(
        1, ge=1, description="Variants running at once. 1 runs them in turn (a laptop); on a cluster raise it and "
        "the autoscaler grows to fit the variants' training and evaluation.",
    )
    cache_dir: str | None = Field(
        None, description="Where variants are built, trained and scored, keyed by their settings and input "
        "(default: <runs_dir>/sweep-cache). A finished variant found here is not run again.",
    )
    reference: str | None = Field(
        "li2025", description="Published figures set beside the run's: li2025 (Li et al. 2025, Table 2, shipped) or a "
        "YAML file in the same format; null for none.",
    )

    @model_validator(mode="after")
    def _models_are_the_sweeps(self) -> "SweepConfig":
        if self.eval.models is not None or self.eval.responses:
            raise ValueError("eval.models and eval.responses are set by the sweep (one student per variant); remove them")
        if self.eval.heldout is not None:
            raise ValueError("eval.heldout is set by the sweep from sweep.heldout; remove it")
        if self.train.heldout is not None:
            raise ValueError("train.heldout: the sweep holds problems out of every variant alike (sweep.heldout)")
        if not self.eval.benchmarks and self.heldout is None:
            raise ValueError("eval.benchmarks is empty and sweep.heldout is not set: the variants would be evaluated "
                             "on nothing")
        if not backend_class(self.eval.generate.backend).applies_adapters and self.train.mode == "lora" and not self.train.merge:
            raise ValueError(f"eval.generate.backend: {self.eval.generate.backend} evaluates each student as a merged "
                             "model, but train saves only a LoRA adapter: set train.merge: true")
        names = [g.variant_name(r) for g in self.grid for r in g.ratios] + ["base", "unperturbed", "dlcot"]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"grid: variant names used twice: {duplicated} (give grid entries a name)")
        return self
