"""Pure functions on records: problems to sample rows, completions into records, the output fingerprint.

Nothing here touches Ray; ``stage.py`` wires these into a dataset, and tests call them directly.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Iterable

from longcot import records
from longcot.errors import ConfigError, RejectRow
from longcot.generate.backend import Completion, Engine
from longcot.generate.config import GenerateConfig, GenerateLineage, SampleSampling, SamplingConfig
from longcot.generate.prompting import build_messages, prompt_version
from longcot.recordfiles import existing_ids, load_records, write_records
from longcot.rundir import write_json
from longcot.traces import parse_fields

STAGE = "generate"
# What a problem record keeps when it becomes a sample; generation and later fields start empty.
PROBLEM_FIELDS = ("problem_id", "source", "domain", "problem", "reference_answer", "tests", "metadata", "lineage")


def sample_seed(base: int, sample_id: str) -> int:
    """The seed of one sample: a stable function of the base seed and the sample id (fits in 31 bits)."""
    return int(records.stable_hash("seed", int(base), sample_id), 16) % (2**31 - 1)


def as_problem(row: dict, where: str = "") -> dict:
    """A problem record from any input row: the problem fields only, ids filled in when missing.

    Raises ``RejectRow`` for a row without problem text.
    """
    problem = row.get("problem")
    if not isinstance(problem, str) or not problem.strip():
        raise RejectRow(f"{where}no problem text")
    out = {name: row.get(name) for name in PROBLEM_FIELDS}
    out["domain"] = out["domain"] or "math"
    if not out["problem_id"]:
        out["problem_id"] = records.problem_id(problem, out["source"])
    out["id"] = out["problem_id"]
    return records.conform(out)


def expand_samples(problem: dict, n: int) -> list[dict]:
    """Sample rows ``0..n-1`` of a problem (``records.for_sample``); a resumed run's runner skips those written."""
    return [records.for_sample(problem, index) for index in range(n)]


def messages_for(row: dict, config: GenerateConfig) -> list[dict]:
    return build_messages(row, markers=config.markers, instruction=config.instruction, system=config.system_prompt)


def fill_completion(row: dict, completion: Completion, *, model: str, detail: GenerateLineage, **more: Any) -> dict:
    """The record of one generated sample: response, counts, finish reason, parsed sections, and the lineage
    ``detail`` with ``more`` of this sample's own (its sampling, its line in a recording) and its timing."""
    out = dict(row)
    ok = completion.finish_reason != "error"
    out.update(
        response=completion.text if ok else None,
        model=model,
        finish_reason=completion.finish_reason,
        prompt_tokens=int(completion.prompt_tokens),
        output_tokens=int(completion.output_tokens),
        error=completion.error if not ok else None,
        truncated=completion.finish_reason == "length",
    )
    if ok:
        out = parse_fields(out)
    timing = {"seconds": None if completion.seconds is None else round(completion.seconds, 3)}
    if completion.attempts != 1:
        timing["attempts"] = completion.attempts
    return records.add_lineage(out, detail.adding(**more, **timing))


def sampling_detail(sampling: SamplingConfig, row_id: str) -> SampleSampling:
    """How sample ``row_id`` is drawn: the stage's sampling with the sample's own seed."""
    return SampleSampling(**sampling.model_dump(exclude={"n", "seed"}), seed=sample_seed(sampling.seed, row_id))


def complete_rows(rows: list[dict], engine: Engine, sampling: SamplingConfig, *, model: str,
                  detail: GenerateLineage) -> list[dict]:
    """Generate every row's ``prompt`` with ``engine`` and return the filled records (same order).

    An engine that raises fails the batch's rows (``finish_reason="error"``), it does not stop the job.
    """
    if not rows:
        return []
    drawn = [sampling_detail(sampling, r["id"]) for r in rows]  # each with the sample's own seed
    started = time.perf_counter()
    try:
        completions = engine.generate([r["prompt"] for r in rows], max_tokens=sampling.max_tokens,
                                      temperature=sampling.temperature, top_p=sampling.top_p,
                                      seed=[d.seed for d in drawn])
    except Exception as exc:
        seconds = time.perf_counter() - started
        completions = [Completion.failed(f"{type(exc).__name__}: {exc}", seconds=seconds) for _ in rows]
    return [fill_completion(r, c, model=model, detail=detail, sampling=d) for r, c, d in zip(rows, completions, drawn)]


# --- the output's fingerprint: what must not change between the runs that write one output ---------


def fingerprint(config: GenerateConfig) -> dict[str, Any]:
    """Model, backend, prompt and sampling settings (not ``n``: more samples may be added later), and what
    the backend itself says decides its samples (``Backend.identity``)."""
    from longcot.generate.backends import make_backend

    settings = {
        "backend": config.backend,
        "model": config.model,
        "markers": config.markers,
        "prompt_version": prompt_version(config.markers, config.instruction, config.system_prompt),
        "sampling": config.sampling.model_dump(exclude={"n"}),
        **make_backend(config).identity(),
    }
    return {"settings": settings, "hash": records.stable_hash(settings, length=12)}


def fingerprint_path(output: str | Path) -> Path:
    p = Path(output)
    return p.with_name(p.name + ".generate.json")


def _changed(old: dict, new: dict, prefix: str = "") -> list[str]:
    """``key: old -> new`` for every setting that differs, those of a nested group as ``group.key``."""
    diffs = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += _changed(a, b, f"{prefix}{key}.")
        elif a != b:
            diffs.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return diffs


def claim_output(output: str | Path, config: GenerateConfig, *, has_records: bool) -> Path:
    """Decide where this run writes, given what is already at ``output``; returns the path to use.

    - nothing there, or samples made with the same fingerprint: ``output`` (resume);
    - samples made otherwise: per ``config.if_changed``, a ``ConfigError`` listing what changed,
      a sibling output named after the new fingerprint, or ``output`` emptied.
    The fingerprint file next to the output is (re)written before any sample is.
    """
    out = Path(output)
    mine = fingerprint(config)
    fp_file = fingerprint_path(out)
    theirs = json.loads(fp_file.read_text()) if fp_file.exists() else None
    if has_records and (theirs is None or theirs.get("hash") != mine["hash"]):
        what = ("; ".join(_changed(theirs.get("settings", {}), mine["settings"])) if theirs
                else f"{fp_file.name} is missing")
        if config.if_changed == "refuse":
            raise ConfigError(
                f"{out}: holds samples made with other settings ({what}). Refusing to mix them: choose another "
                "--output, or set if_changed to new_output (write beside it) or overwrite (discard it)"
            )
        if config.if_changed == "new_output":
            out = out.with_name(f"{out.stem}.{mine['hash']}{out.suffix}")
            return claim_output(out, config, has_records=bool(existing_ids(out)))
        write_records(out, [])  # emptied
    write_json(fp_file, mine)  # written whole, so a kill never leaves half a fingerprint
    return out


def drop_error_records(path: str | Path) -> int:
    """Remove the ``finish_reason == "error"`` records from an output, file by file with atomic
    replaces (a kill leaves each file old or new, never half). Returns how many were removed."""
    p = Path(path)
    removed = 0
    for part in (sorted(p.glob("part-*.parquet")) if p.is_dir() else [p]) if p.exists() else []:
        rows = load_records(part)
        keep = [r for r in rows if r["finish_reason"] != "error"]
        if len(keep) < len(rows):
            removed += len(rows) - len(keep)
            tmp = part.with_name(f".tmp-{part.name}")  # the same suffix: the same format
            write_records(tmp, keep)
            os.replace(tmp, part)
    return removed


def output_stats(rows: Iterable[dict]) -> dict[str, int]:
    """Disjoint counts of generated records: ``ok`` (stopped), ``truncated`` (hit max_tokens), ``error``."""
    counts = {"ok": 0, "truncated": 0, "error": 0}
    for row in rows:
        reason = row.get("finish_reason")
        counts["error" if reason == "error" else "truncated" if reason == "length" else "ok"] += 1
    return counts
