"""Problem sources. Each yields problem records, or ``Rejected`` items for rows it cannot use.

A row that lacks the problem column, or whose problem is empty, is rejected with the file and line;
a file that lacks the column in every row is an ``InputError`` (the field mapping is probably wrong).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from longcot import records
from longcot.errors import ConfigError, InputError
from longcot.problems import benchmarks
from longcot.problems.config import BenchmarkSource, FieldMap, FileSource, GymSource, HFSource, ProblemsLineage
from longcot.recordfiles import BadLine, read_raw


@dataclass
class Rejected:
    reason: str
    raw: dict | str


def _map_row(row: dict, fields: FieldMap, source: str, domain: str, where: str) -> dict | Rejected:
    if fields.problem not in row:
        return Rejected(f"{where}: missing column {fields.problem!r}", row)
    problem = row[fields.problem]
    if not isinstance(problem, str) or not problem.strip():
        return Rejected(f"{where}: empty or non-text {fields.problem!r}", row)
    answer = row.get(fields.answer) if fields.answer else None
    tests = row.get(fields.tests) if fields.tests else None
    if isinstance(tests, str):
        try:
            tests = json.loads(tests)
        except json.JSONDecodeError:
            tests = {"kind": "function", "test": tests}
    row_domain = row.get(fields.domain) if fields.domain else None
    used = {fields.problem, fields.answer, fields.tests, fields.domain, fields.response}
    metadata = {k: v for k, v in row.items() if k not in used}
    if fields.id and fields.id in row:
        metadata["source_id"] = row[fields.id]
    record = records.new_problem(
        problem, source=source, domain=row_domain or domain, reference_answer=answer, tests=tests,
        metadata=metadata or None,
    )
    if fields.response:
        response = row.get(fields.response)
        if not isinstance(response, str) or not response.strip():
            return Rejected(f"{where}: empty or missing response column {fields.response!r}", row)
        return imported_sample(record, response)
    return record


def imported_sample(problem_row: dict, response: str) -> dict:
    """A ready-made trace as a sample record: its id hashes the response too, so several traces of one
    problem stay distinct while the same trace imported twice is a duplicate."""
    row = records.for_sample(problem_row, 0)
    row["id"] = records.stable_hash("imported", problem_row["problem_id"], response)
    row["response"] = response
    return records.add_lineage(row, ProblemsLineage(imported=True))


def _limited(items: Iterator, limit: int | None) -> Iterator:
    taken = 0
    for item in items:
        if limit is not None and taken >= limit:
            return
        if not isinstance(item, Rejected):
            taken += 1
        yield item


def read_file_source(cfg: FileSource) -> Iterator[dict | Rejected]:
    path = Path(cfg.path)
    source = f"file:{path.name}"
    # rows without the problem column wait until a row has it (None from then on): one bad row, or a wrong mapping?
    held: list[Rejected] | None = []
    for item in read_raw(path):
        if isinstance(item, BadLine):
            yield Rejected(f"{item.path}:{item.line}: {item.reason}", item.text)
            continue
        number, row = item
        mapped = _map_row(row, cfg.fields, source, cfg.domain, f"{path}:{number}")
        if held is not None:
            if cfg.fields.problem not in row:
                held.append(mapped)
                continue
            yield from held
            held = None
        yield mapped
    if held:
        raise InputError(
            f"no row has the problem column {cfg.fields.problem!r} (columns: {sorted(held[0].raw)}); "
            "set fields.problem to the right column",
            str(path),
        )


def read_hf_source(cfg: HFSource) -> Iterator[dict | Rejected]:
    """A Hugging Face dataset by hub name, or a ``save_to_disk`` directory (``load_from_disk``)."""
    import datasets

    local = Path(cfg.name)
    try:
        if local.is_dir() and any((local / f).exists() for f in ("dataset_info.json", "dataset_dict.json")):
            loaded = datasets.load_from_disk(str(local))
            ds = loaded[cfg.split] if isinstance(loaded, datasets.DatasetDict) else loaded
        else:
            ds = datasets.load_dataset(cfg.name, cfg.subset, split=cfg.split)
    except KeyError as exc:
        raise InputError(f"dataset has no split {cfg.split!r}", cfg.name) from exc
    except Exception as exc:
        raise InputError(f"cannot load dataset: {type(exc).__name__}: {exc}", cfg.name) from exc
    if cfg.fields.problem not in ds.column_names:
        raise InputError(
            f"no column {cfg.fields.problem!r} (columns: {ds.column_names}); set fields.problem", cfg.name
        )
    source = f"hf:{cfg.name}" + (f"/{cfg.subset}" if cfg.subset else "")
    for index, row in enumerate(ds):
        yield _map_row(row, cfg.fields, source, cfg.domain, f"{cfg.name}[{cfg.split}][{index}]")


def read_gym_source(cfg: GymSource) -> Iterator[dict]:
    """Problems from reasoning-gym; the entry travels in ``tests`` so verify can score with its own verifier."""
    import reasoning_gym

    try:
        ds = reasoning_gym.create_dataset(cfg.task, size=cfg.size, seed=cfg.seed)
    except Exception as exc:
        raise ConfigError(f"problems.sources: reasoning-gym task {cfg.task!r}: {exc}") from None
    for index, entry in enumerate(ds):
        yield records.new_problem(
            entry["question"],
            source=f"reasoning_gym:{cfg.task}",
            domain=cfg.domain,
            reference_answer=entry.get("answer"),
            tests={"kind": "reasoning_gym", "task": cfg.task, "entry": entry},
            metadata={"seed": cfg.seed, "index": index},
        )


def read_benchmark_source(cfg: BenchmarkSource) -> Iterator[dict]:
    override = {"domain": cfg.domain} if cfg.domain else {}
    for row in benchmarks.iter_problems(benchmarks.get_benchmark(cfg.name)):
        yield row | override


def read_source(cfg) -> Iterator[dict | Rejected]:
    readers = {
        "file": read_file_source,
        "hf": read_hf_source,
        "benchmark": read_benchmark_source,
        "reasoning_gym": read_gym_source,
    }
    return _limited(readers[cfg.kind](cfg), cfg.limit)


def input_files(cfg) -> list[str]:
    """Local files a source reads, for the manifest's input hashes."""
    if cfg.kind == "file":
        return [cfg.path]
    if cfg.kind == "hf" and Path(cfg.name).is_dir():
        return [cfg.name]
    if cfg.kind == "benchmark":
        spec = benchmarks.get_benchmark(cfg.name)
        return [str(spec.data_path())] if spec.file else []
    return []
