"""Where problems come from."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field

from longcot.records import Lineage
from longcot.settings import StrictModel

Domain = Literal["math", "code", "mcq", "gym"]  # which verifier scores a problem


class FieldMap(StrictModel):
    """Which input column holds each record field."""

    problem: str = Field("problem", description="Column with the problem statement.")
    answer: str | None = Field("answer", description="Column with the reference answer (null: none).")
    id: str | None = Field(None, description="Column with a source id, kept in metadata.")
    tests: str | None = Field(None, description="Column with code tests (JSON or text).")
    domain: str | None = Field(None, description="Column with a per-row domain, overriding `domain`.")
    response: str | None = Field(
        None, description="Column with an existing response: imports ready-made traces as sample records."
    )


class _SourceBase(StrictModel):
    limit: int | None = Field(None, ge=1, description="Take at most this many problems from the source.")
    domain: Domain = Field("math", description="Domain of the problems.")


class FileSource(_SourceBase):
    """A local JSONL or Parquet file (or a directory of Parquet files)."""

    kind: Literal["file"] = "file"
    path: str = Field(..., description="Path to the file; relative paths are from the working directory.")
    fields: FieldMap = Field(default_factory=FieldMap)


class HFSource(_SourceBase):
    """A Hugging Face dataset: a hub name, or a directory written by `Dataset.save_to_disk`."""

    kind: Literal["hf"] = "hf"
    name: str = Field(..., description="Hub dataset name or local dataset directory.")
    subset: str | None = Field(None, description="Dataset configuration name.")
    split: str = Field("train", description="Split to read.")
    fields: FieldMap = Field(default_factory=FieldMap)


class BenchmarkSource(_SourceBase):
    """One of the benchmarks in the registry (see `longcot.problems.benchmarks`)."""

    kind: Literal["benchmark"] = "benchmark"
    name: str = Field(..., description="Registry name, e.g. gsm8k, math500, aime24, gpqa, humaneval.")
    domain: Domain | None = Field(None, description="Override the registry's domain.")


class GymSource(_SourceBase):
    """Procedurally generated problems with verifiers, from reasoning-gym."""

    kind: Literal["reasoning_gym"] = "reasoning_gym"
    task: str = Field(..., description="reasoning-gym dataset name, e.g. basic_arithmetic, chain_sum.")
    size: int = Field(16, ge=1, description="How many problems to generate.")
    seed: int = Field(0, description="Generator seed: the same seed gives the same problems.")
    domain: Domain = "gym"


Source = Annotated[Union[FileSource, HFSource, BenchmarkSource, GymSource], Field(discriminator="kind")]


class ProblemsConfig(StrictModel):
    """Problem sources, read in order and concatenated."""

    sources: list[Source] = Field(..., min_length=1, description="One or more sources.")


class ProblemsLineage(Lineage, stage="problems"):
    """The problems stage's lineage: set on a ready-made trace read with its response (``imported``)."""

    imported: bool = Field(False, description="The record came with its response (a ready-made trace).")
