"""Curation: which verified traces become training data. Pure functions on lists of rows.

Filters, in order (the first that drops a row gives its reason): the verdict (``keep_correct_only``),
truncation, an empty thought, token length, benchmark contamination, exact duplicates, near duplicates (same problem),
and the per-problem cap. Rows are considered per problem in sample order, so the kept set is the same
whatever order the rows arrived in.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from longcot.verify.config import CurateConfig, VerifyConfig
from longcot.verify.decontaminate import BenchmarkIndex, benchmark_index, ngrams

SHINGLE = 5  # words per shingle for near-duplicate similarity


@dataclass
class Curated:
    """The outcome: rows kept (input order), rows dropped with their reasons, and the report."""

    kept: list[dict] = field(default_factory=list)
    dropped: list[tuple[dict, str]] = field(default_factory=list)
    report: dict = field(default_factory=dict)


def _normal_text(text: str | None) -> str:
    return re.sub(r"\s+", " ", text or "").strip()


def _shingles(text: str) -> set[int]:
    tokens = re.findall(r"\w+", text.lower())
    return ngrams(tokens, SHINGLE) if len(tokens) >= SHINGLE else {hash(tuple(tokens))}


def jaccard(a: set[int], b: set[int]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def total_tokens(row: dict) -> int | None:
    if row.get("thought_tokens") is None and row.get("solution_tokens") is None:
        return None
    return (row.get("thought_tokens") or 0) + (row.get("solution_tokens") or 0)


def curate(rows: list[dict], config: VerifyConfig, index: BenchmarkIndex | None = None) -> Curated:
    """Split verified rows into kept and dropped (with reasons) per ``config``; see the module doc."""
    cfg: CurateConfig = config.curate
    deco = cfg.decontaminate
    if deco.enabled and index is None:
        index = benchmark_index(tuple(deco.benchmarks) if deco.benchmarks else None, deco.ngram,
                                exclude=tuple(deco.exclude), extra_dirs=tuple(deco.benchmark_dirs))
    order = sorted(range(len(rows)), key=lambda i: (rows[i].get("problem_id") or "",
                                                    rows[i].get("sample_index") or 0, rows[i].get("id") or ""))
    reasons: dict[int, str] = {}
    contamination: dict[str, tuple] = {}  # problem text -> (Contamination | None, its report entry)
    seen_exact: dict[str, str] = {}  # response digest -> id kept
    kept_by_problem: dict[str, list[tuple[str, set[int]]]] = {}
    per_problem: dict[str, int] = {}
    for i in order:
        row = rows[i]
        reason = _verdict_reason(row, config) or _length_reason(row, cfg)
        if reason is None and deco.enabled and index is not None:
            problem = row.get("problem") or ""
            if problem not in contamination:
                found = index.match(problem, deco.min_overlap)
                contamination[problem] = (found, found and {
                    "problem_id": row.get("problem_id"), "source": row.get("source"),
                    "problem": problem[:300], "benchmark": found.benchmark,
                    "benchmark_index": found.benchmark_index,
                    "benchmark_problem": found.benchmark_problem[:300],
                    "overlap": found.overlap, "shared_ngrams": found.shared, "ids": [],
                })
            found, entry = contamination[problem]
            if found:
                reason = found.reason(deco.ngram)
                entry["ids"].append(row.get("id"))
        response = _normal_text(row.get("response"))
        if reason is None and cfg.dedup_exact:
            digest = hashlib.sha256(response.encode("utf-8")).hexdigest()
            if digest in seen_exact:
                reason = f"exact duplicate of {seen_exact[digest]}"
            else:
                seen_exact[digest] = row.get("id")
        problem_key = _normal_text(row.get("problem")).lower()
        if reason is None and cfg.near_duplicate is not None:
            shingles = _shingles(response)
            for other_id, other in kept_by_problem.get(problem_key, []):
                similarity = jaccard(shingles, other)
                if similarity >= cfg.near_duplicate:
                    reason = f"near duplicate of {other_id} (Jaccard {similarity:.2f})"
                    break
            if reason is None:
                kept_by_problem.setdefault(problem_key, []).append((row.get("id"), shingles))
        if reason is None and cfg.max_per_problem is not None:
            count = per_problem.get(problem_key, 0)
            if count >= cfg.max_per_problem:
                reason = f"over the per-problem cap of {cfg.max_per_problem}"
            else:
                per_problem[problem_key] = count + 1
        if reason is not None:
            reasons[i] = reason
    kept = [row for i, row in enumerate(rows) if i not in reasons]
    removed_problems = [entry for _, entry in contamination.values() if entry]  # in the order first met
    dropped = [(row, reasons[i]) for i, row in enumerate(rows) if i in reasons]
    return Curated(kept, dropped, {
        "decontamination": {
            "enabled": deco.enabled,
            "ngram": deco.ngram,
            "min_overlap": deco.min_overlap,
            "benchmarks": index.names if index is not None and deco.enabled else [],
            "benchmark_problems": len(index) if index is not None and deco.enabled else 0,
            "problems_checked": len(contamination),
            "problems_removed": len(removed_problems),
            "records_removed": sum(len(r["ids"]) for r in removed_problems),
            "removed": removed_problems,
        },
    })


def _verdict_reason(row: dict, config: VerifyConfig) -> str | None:
    if config.keep_correct_only and row.get("verdict") != "correct":
        why = f": {row['error']}" if row.get("error") else ""
        return f"verdict {row.get('verdict')}{why}"
    if config.curate.drop_truncated and row.get("truncated"):
        return "truncated: the response stops before its closing marker"
    if config.curate.drop_empty_thought and row.get("markers") in ("sky", "think") and not (row.get("thought") or "").strip():
        return "empty thought: the thought markers enclose nothing, so there is no reasoning to learn from"
    return None


def _length_reason(row: dict, cfg: CurateConfig) -> str | None:
    tokens = total_tokens(row)
    if tokens is None:
        return None
    if cfg.min_tokens is not None and tokens < cfg.min_tokens:
        return f"too short: {tokens} tokens < min_tokens {cfg.min_tokens}"
    if cfg.max_tokens is not None and tokens > cfg.max_tokens:
        return f"too long: {tokens} tokens > max_tokens {cfg.max_tokens}"
    return None


def reason_kind(reason: str) -> str:
    """The category of a drop reason, for counts: ``verdict incorrect``, ``contaminated``, ``exact duplicate`` ..."""
    head = reason.split(":")[0]
    kinds = ("exact duplicate", "near duplicate", "over the per-problem cap")  # these go on with an id or a number
    return next((kind for kind in kinds if head.startswith(kind)), head)
