"""Typed job configuration, loaded from YAML and validated with pydantic.

A job is a pipeline of optional stages, run in this order:
``problems -> generate -> verify -> dlcot -> perturb -> train -> eval -> serve``.
Each stage's config class lives next to the stage (``longcot/<stage>/config.py``); this module composes
them into ``JobConfig``. A bad config fails at load time with the field's dotted path and, for a choice,
the allowed values (``ConfigError``, exit status 2).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from longcot.dlcot.config import DlcotConfig
from longcot.errors import ConfigError, validated
from longcot.eval.config import HELDOUT_RECORDS, STUDENT, EvalConfig
from longcot.generate.config import GenerateConfig, backend_class
from longcot.perturb.config import PerturbConfig
from longcot.problems.config import ProblemsConfig
from longcot.serve.config import ServeConfig
from longcot.settings import RayConfig, StrictModel
from longcot.sweep.config import SweepConfig
from longcot.train.config import TrainConfig
from longcot.verify.config import VerifyConfig
from longcot.yamlfile import read_yaml

STAGE_ORDER = ("problems", "generate", "verify", "dlcot", "perturb", "train", "eval", "serve", "sweep")


class JobConfig(StrictModel):
    """One longcot job: which stages run and how. Every stage is optional."""

    name: str = Field("job", pattern=r"^[A-Za-z0-9._-]+$", description="Job name; names the run directory.")
    runs_dir: str = Field("runs", description="Where run directories are created (relative to the working dir).")
    record_format: Literal["jsonl", "parquet"] = Field(
        "jsonl", description="Format of each stage's record output inside the run directory."
    )
    ray: RayConfig = Field(default_factory=RayConfig)

    problems: ProblemsConfig | None = Field(None, description=ProblemsConfig.__doc__)
    generate: GenerateConfig | None = Field(None, description=GenerateConfig.__doc__)
    verify: VerifyConfig | None = Field(None, description=VerifyConfig.__doc__)
    dlcot: DlcotConfig | None = Field(None, description=DlcotConfig.__doc__)
    perturb: PerturbConfig | None = Field(None, description=PerturbConfig.__doc__)
    train: TrainConfig | None = Field(None, description=TrainConfig.__doc__)
    eval: EvalConfig | None = Field(None, description=EvalConfig.__doc__)
    serve: ServeConfig | None = Field(None, description=ServeConfig.__doc__)
    sweep: SweepConfig | None = Field(None, description=SweepConfig.__doc__)

    @model_validator(mode="after")
    def _student_is_trained_in_this_job(self) -> "JobConfig":
        """``@student`` in eval or serve needs a train stage, and a non-hf eval backend a merged model:
        caught at load time, not after hours of training."""
        users = [(f"eval.models[{i}].model", m.generate.get("backend", self.eval.generate.backend))
                 for i, m in enumerate(self.eval.models or []) if m.model == STUDENT] if self.eval else []
        if self.serve and STUDENT in (self.serve.model, self.serve.adapter):
            users.append(("serve.model", "hf"))
        for where, backend in users:
            if self.train is None:
                raise ValueError(f"{where}: {STUDENT} stands for the student this job trains, but the job has no "
                                 "train stage (add one, or give the student's path)")
            if not backend_class(backend).applies_adapters and self.train.mode == "lora" and not self.train.merge:
                raise ValueError(f"{where}: {STUDENT} with the {backend} backend needs a merged model, but train "
                                 "saves only a LoRA adapter: set train.merge: true")
        if self.eval and self.eval.evaluates_nothing():
            raise ValueError("eval.benchmarks: empty, and no eval.heldout or eval.responses: nothing to evaluate")
        if self.eval and self.eval.heldout and self.eval.heldout.records == HELDOUT_RECORDS and (
                self.train is None or self.train.heldout is None):
            raise ValueError(f"eval.heldout.records: {HELDOUT_RECORDS} stands for the problems the train stage holds "
                             "out, but the job has no train stage with train.heldout (add one, or give a record file)")
        return self

    def stages(self) -> list[str]:
        """The configured stages, in pipeline order."""
        return [name for name in STAGE_ORDER if getattr(self, name, None) is not None]

    def config_hash(self) -> str:
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def parse_job(data: dict, source: str = "<config>") -> JobConfig:
    return validated(JobConfig, data, source)


def load_job(path: str | Path) -> JobConfig:
    """Load and validate a job YAML; raises ``ConfigError`` naming the file and the field."""
    p = Path(path)
    data = read_yaml(p, what="job config") or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: a job config must be a mapping of stage names to settings")
    return parse_job(data, str(p))
