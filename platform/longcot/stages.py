"""The stage contract shared by the pipeline and the CLI.

Every stage module exposes ``run(config, input_path, ctx) -> StageResult``: it reads records from
``input_path`` (None for a source stage), writes its records to ``ctx.output_path(stage)`` and the rows
it could not process to ``ctx.rejected_path(stage)``, and returns the counts. The pipeline chains
stages through those paths; each CLI subcommand calls the same ``run`` with ``--input`` / ``--output``.
Records in must equal records out plus rejected (``StageResult.check_counts``), except for stages that
fan out (generate: n samples per problem) or that consume records without emitting any (train, eval).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from longcot.rundir import RunDir

@dataclass
class StageResult:
    stage: str
    records_in: int = 0
    records_out: int = 0
    records_rejected: int = 0
    output: str | None = None  # record file the next stage reads (None: this stage emits no records)
    artifacts: dict[str, str] = field(default_factory=dict)  # e.g. {"student_adapter": ".../adapter"}
    summary: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    started_at: float | None = None  # wall-clock start (Unix time), set by the pipeline
    fan_out: bool = False  # records_out may exceed records_in (one record per sample)
    nodes: list[str] = field(default_factory=list)  # ids of the Ray nodes its workers ran on (dataflow.nodes_of)
    headlines: list[str] = field(default_factory=list)  # what the stage found, one line each, printed by the run

    def check_counts(self) -> None:
        """Raise if records were lost: in == out + rejected (for a 1:1 stage)."""
        if self.fan_out or self.output is None:
            return
        if self.records_in != self.records_out + self.records_rejected:
            raise RuntimeError(
                f"stage {self.stage} lost records: {self.records_in} in, "
                f"{self.records_out} out + {self.records_rejected} rejected"
            )

    def manifest_entry(self) -> dict[str, Any]:
        """The run manifest's entry: every field but ``stage`` and ``fan_out``, seconds rounded to the ms, and the
        start and finish as ISO times (when the pipeline set ``started_at``)."""
        skipped = ("stage", "fan_out", "started_at")
        entry = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skipped}
        entry["seconds"] = round(self.seconds, 3)
        if self.started_at is not None:
            entry.update(started_at=_iso(self.started_at), finished_at=_iso(self.started_at + self.seconds))
        return entry


@dataclass
class StageContext:
    """What a stage knows about the run it is part of."""

    run_dir: RunDir
    record_format: str = "jsonl"
    artifacts: dict[str, str] = field(default_factory=dict)  # accumulated from earlier stages
    output_override: str | None = None  # CLI --output: where this stage's records go
    progress: bool = True
    ray: Any = None  # RayConfig; None means "connect with defaults". Stages that use Ray call connect(ctx.ray).

    def output_path(self, stage: str) -> Path:
        if self.output_override:
            return Path(self.output_override)
        name = "records.jsonl" if self.record_format == "jsonl" else "records"
        return self.run_dir.stage_dir(stage) / name

    def rejected_path(self, stage: str) -> Path:
        if self.output_override:
            out = Path(self.output_override)
            return out.with_name(out.stem + ".rejected.jsonl") if out.suffix else out / "rejected.jsonl"
        return self.run_dir.stage_dir(stage) / "rejected.jsonl"


def _iso(unix: float) -> str:
    return datetime.fromtimestamp(unix, timezone.utc).isoformat(timespec="milliseconds")
