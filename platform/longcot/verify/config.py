"""Verification and curation settings: how answers are checked, which traces are kept, what is exported."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from longcot.models import DEFAULT_MODEL
from longcot.records import Lineage
from longcot.settings import StageResources, StrictModel


class SandboxConfig(StrictModel):
    """Limits of one run of a generated program (a code answer), each run in a fresh sandbox."""

    timeout_s: float = Field(10.0, gt=0, description="Wall-clock limit of one run; the whole run is killed after it.")
    cpu_s: int | None = Field(None, ge=1, description="CPU-time limit (RLIMIT_CPU); default: timeout_s rounded up.")
    memory_mb: int = Field(1024, ge=64, description="Address-space limit (RLIMIT_AS) of the program.")
    max_output_kb: int = Field(1024, ge=1, description="stdout and stderr are each read up to this; more kills the run.")
    max_file_mb: int = Field(16, ge=1, description="Largest file the program may write (RLIMIT_FSIZE).")
    workdir_mb: int = Field(64, ge=1, description="Size of the program's private, writable /tmp.")
    max_processes: int = Field(16, ge=1, description="Processes and threads the program may have (RLIMIT_NPROC).")
    python: str | None = Field(
        None,
        description="Interpreter for the program; default: this one if an unprivileged user can run it, "
        "else python3 on PATH.",
    )


class DecontaminateConfig(StrictModel):
    """Drop training problems that overlap a benchmark problem (word n-grams)."""

    enabled: bool = Field(True, description="Check every problem against the benchmarks.")
    ngram: int = Field(8, ge=3, description="Length of the word n-grams compared.")
    min_overlap: float = Field(
        0.5, gt=0, le=1,
        description="Fraction of a problem's n-grams found in one benchmark problem that makes it contaminated.",
    )
    benchmarks: list[str] | None = Field(None, description="Registry names to check against; default: every one.")
    exclude: list[str] = Field(default_factory=list, description="Registry names not to check against.")
    benchmark_dirs: list[str] = Field(default_factory=list, description="Extra registry directories.")


class CurateConfig(StrictModel):
    """Which verified traces are kept. Every dropped trace goes to the rejected file with its reason."""

    drop_truncated: bool = Field(True, description="Drop responses that stop before their closing marker.")
    drop_empty_thought: bool = Field(
        True, description="Drop responses whose thought markers enclose nothing (a right answer, but no reasoning)."
    )
    max_per_problem: int | None = Field(None, ge=1, description="Keep at most this many traces per problem.")
    dedup_exact: bool = Field(True, description="Drop responses identical (up to whitespace) to a kept one.")
    near_duplicate: float | None = Field(
        0.9, gt=0, le=1,
        description="Drop a response whose word 5-gram Jaccard similarity to a kept response of the same problem "
        "is at least this (null: off).",
    )
    min_tokens: int | None = Field(None, ge=0, description="Drop traces with fewer thought+solution tokens.")
    max_tokens: int | None = Field(None, ge=1, description="Drop traces with more thought+solution tokens.")
    decontaminate: DecontaminateConfig = Field(default_factory=DecontaminateConfig, description=DecontaminateConfig.__doc__)


class ExportConfig(StrictModel):
    """Training files written from the kept traces (LLaMA-Factory, axolotl and TRL read them)."""

    formats: list[Literal["messages", "sharegpt", "parquet"]] = Field(
        default_factory=list, description="messages: OpenAI chat JSONL; sharegpt: ShareGPT JSON; parquet: messages."
    )
    dir: str | None = Field(None, description="Where to write them; default: the stage's run directory.")
    field: Literal["response", "dlcot_response"] = Field(
        "response", description="Which text is the assistant turn (dlcot_response falls back to response)."
    )
    style: Literal["raw", "think", "reasoning_content"] = Field(
        "raw", description="raw: the response as generated; think: <think>thought</think> then the solution; "
        "reasoning_content: the thought in the assistant message's reasoning_content and the solution in its "
        "content (R1-style chat templates; messages and parquet only).",
    )
    system: str | None = Field(None, description="A system message put first in every conversation.")
    instruction: str | None = Field(
        None, description="Text after the problem in the user turn, as the train stage adds it: null is the "
        "row's own, else its domain's default (what train uses by default); '' for the bare problem.",
    )
    include_incorrect: bool = Field(
        False, description="Also export traces whose verdict is known and not correct (unverified ones always go).",
    )


class VerifyConfig(StrictModel):
    """Check each sample's final answer (math, multiple choice, code in a sandbox, reasoning-gym), then curate."""

    timeout_s: float = Field(
        5.0, gt=0,
        description="Per-item limit of a math or reasoning-gym check, in CPU seconds (a wall-clock backstop "
        "of 4x, at least +30 s, covers a check starved of CPU).",
    )
    workers: int | None = Field(
        None, ge=1,
        description="Checker processes (and parallel sandbox runs) per verifier; default: resources.num_cpus "
        "when above 1, else the machine's CPU count.",
    )
    keep_correct_only: bool = Field(True, description="Drop (to rejected) every sample that is not correct.")
    tokenizer: str = Field(DEFAULT_MODEL, description="Tokenizer that counts thought and solution tokens (the student's).")
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig, description=SandboxConfig.__doc__)
    curate: CurateConfig = Field(default_factory=CurateConfig, description=CurateConfig.__doc__)
    export: ExportConfig = Field(default_factory=ExportConfig, description=ExportConfig.__doc__)
    histogram: bool = Field(True, description="Write the token-length histogram PNG next to stats.json.")
    batch_size: int = Field(64, ge=1, description="Records per verification batch (one Ray Data block).")
    resources: StageResources = Field(
        default_factory=StageResources, description="What each verifier actor asks Ray for; its pool uses num_cpus."
    )
    actors: int = Field(1, ge=1, description="Verifier actors (each with its own checker pool).")

    def pool_size(self) -> int | None:
        """Checker processes per verifier (None: the machine's CPU count)."""
        if self.workers:
            return self.workers
        return int(self.resources.num_cpus) if self.resources.num_cpus > 1 else None


class VerifyLineage(Lineage, stage="verify"):
    """How one record's verdict was reached: by which checker, how, and the batch's wall time."""

    verdict: str = Field(description="correct, incorrect, no_answer, timeout or error.")
    checker: str | None = Field(None, description="What decided: math-verify, string, letter, sandbox, reasoning_gym.")
    how: str | None = Field(None, description="Where the predicted answer was read from in the response.")
    batch_seconds: float | None = Field(None, description="Wall time of the batch the record was checked in.")
    detail: str | None = Field(None, description="The checker's own note (a gym score, a sandbox's error).")
