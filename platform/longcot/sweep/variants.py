"""The dataset variants of a sweep, each one a small job: [perturb | dlcot] -> train -> eval.

``plan_variants`` turns a ``SweepConfig`` into ``Variant``s. A variant's job is an ordinary longcot
``JobConfig`` (run with ``pipeline.run_job`` inside the variant's Ray task), and its ``key`` is a hash of
that job and of its input records, so a finished variant is recognised when the sweep runs again and a
changed setting or input makes a new one.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from longcot import records
from longcot.eval.config import STUDENT
from longcot.rundir import write_json
from longcot.sweep.config import SweepConfig

RESULT_FILE = "result.json"


@dataclass(frozen=True)
class Variant:
    """One row of the sweep's table."""

    name: str  # base | unperturbed | dlcot | NAME-PERCENT | wrong_answer
    kind: str  # base | unperturbed | dlcot | a perturbation kind
    ratio: float | None = None
    perturb: dict | None = None  # PerturbConfig settings of a perturbation variant
    data: str = "correct"  # which input it is built from: correct | all | none (base: nothing to train on)


def plan_variants(config: SweepConfig) -> list[Variant]:
    """Every variant of the sweep, in table order: base, unperturbed, dlcot, then the grid."""
    variants = []
    if config.base:
        variants.append(Variant("base", "base", data="none"))
    if config.unperturbed:
        variants.append(Variant("unperturbed", "unperturbed"))
    if config.dlcot is not None:
        variants.append(Variant("dlcot", "dlcot"))
    for entry in config.grid:
        for ratio in entry.ratios:
            perturb = entry.perturb_config(ratio, config.seed)
            # wrong answers come from the traces verification rejected, so that variant reads every record
            data = "all" if entry.kind == "wrong_answer" else "correct"
            variants.append(Variant(entry.variant_name(ratio), entry.kind, ratio, perturb.model_dump(mode="json"), data))
    return variants


def variant_job(variant: Variant, config: SweepConfig, heldout_path: str | None = None) -> dict[str, Any]:
    """The stages of a variant as a job mapping (without name, runs_dir and ray, which the runner sets).

    ``heldout_path``: the clean held-out traces every variant is measured on (``sweep.heldout``).
    """
    train = config.train.model_dump(mode="json")
    evaluation = config.eval.model_dump(mode="json")
    if heldout_path is not None:
        evaluation["heldout"] = {"records": heldout_path, "cutoff_len": config.train.data.cutoff_len}
    if variant.kind == "base":
        evaluation["models"] = [{"name": "base", "model": config.train.model}]
        # prompted as the students will be (they carry the prompt on their card; the base model has none)
        evaluation["generate"] = {**evaluation["generate"], **config.train.data.prompt().generate_settings()}
        return {"eval": evaluation}
    evaluation["models"] = [{"name": variant.name, "model": STUDENT}]
    job: dict[str, Any] = {"train": train, "eval": evaluation}
    if variant.kind == "dlcot":
        job["dlcot"] = {**config.dlcot.model_dump(mode="json"), "input": None}
    elif variant.perturb is not None:
        job["perturb"] = variant.perturb
        if variant.kind == "wrong_answer":
            train["data"] = {**train["data"], "only_correct": False}  # the point is to train on wrong answers
    return job


@dataclass
class VariantPlan:
    """A variant ready to run: its job, its input file, its key and its directory."""

    variant: Variant
    job: dict[str, Any]
    input_path: str | None
    key: str
    directory: str
    nothing_to_build: str | None = None  # why the variant cannot run at all (its input has no records)

    @classmethod
    def make(cls, variant: Variant, config: SweepConfig, input_path: str | None, input_hash: str | None,
             cache_dir: Path, ray: dict | None, heldout_path: str | None = None,
             nothing_to_build: str | None = None) -> "VariantPlan":
        stages = variant_job(variant, config, heldout_path)
        key = records.stable_hash("sweep-variant", variant.name, stages, input_hash, length=12)
        if "train" in stages:
            # a stable run name: a variant killed part-way resumes training from its last checkpoint
            checkpoints = stages["train"]["checkpoints"]  # this plan's own copy (variant_job dumps the config)
            checkpoints["run_name"] = checkpoints.get("run_name") or f"{variant.name}-{key}"
        directory = cache_dir / f"{variant.name}-{key}"
        job = {"name": variant.name, "runs_dir": str(cache_dir), **stages}
        if ray is not None:
            job["ray"] = ray
        return cls(variant, job, input_path, key, str(directory), nothing_to_build)

    def finished(self) -> "VariantOutcome | None":
        """The outcome of an earlier run of this very variant, if it finished."""
        try:  # none yet (OSError), or not an outcome this version wrote
            outcome = VariantOutcome(**json.loads((Path(self.directory) / RESULT_FILE).read_text()))
        except (OSError, ValueError, TypeError):
            return None
        return outcome if outcome.status == "finished" and outcome.key == self.key else None

    def outcome(self, status: str, **fields: Any) -> "VariantOutcome":
        """This variant's outcome (``VariantOutcome`` fields beyond its name and key), saved in its directory."""
        variant = self.variant
        outcome = VariantOutcome(variant.name, variant.kind, variant.ratio, status, self.key, self.directory, **fields)
        outcome.save()
        return outcome

    def failed(self, error: str, detail: str = "", seconds: float = 0.0) -> "VariantOutcome":
        if detail:
            Path(self.directory).mkdir(parents=True, exist_ok=True)
            (Path(self.directory) / "error.txt").write_text(detail)
        return self.outcome("failed", error=error, seconds=round(seconds, 2))


@dataclass
class VariantOutcome:
    """What became of a variant: its scores when it finished, the error when it failed."""

    name: str
    kind: str
    ratio: float | None
    status: str  # finished | failed
    key: str
    directory: str
    scores: list[dict] = field(default_factory=list)  # eval BenchmarkScore dicts
    results: str | None = None  # the variant's eval results.json
    stages: dict[str, Any] = field(default_factory=dict)  # counts and summaries from the variant's manifest
    error: str | None = None
    seconds: float = 0.0
    finished_at: str | None = None
    cached: bool = False  # finished in an earlier run of the sweep

    @property
    def shown_status(self) -> str:
        """finished, cached (finished in an earlier run) or failed: what the table and the summary show."""
        return "failed" if self.status != "finished" else ("cached" if self.cached else "finished")

    def save(self) -> None:
        write_json(Path(self.directory) / RESULT_FILE, {**asdict(self), "cached": False})
