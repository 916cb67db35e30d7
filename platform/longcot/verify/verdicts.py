"""Verdicts: parse each sample's response, find its final answer and check it, by domain.

- math: the final answer (``math.final_answer``) against ``reference_answer`` with math-verify, in the
  checker pool (a per-item timeout); a reference that is a choice letter, "(C)", is checked as a letter.
- mcq: the chosen letter against the reference letter.
- code: the program run against ``tests`` in the sandbox (``code.check_code``).
- gym: reasoning-gym's own scorer for the task (``tests`` = ``{"kind": "reasoning_gym", "task", "entry"}``),
  in the checker pool; a score of 1 is correct.

Verdicts: correct | incorrect | no_answer (nothing to check) | timeout (the check overran) | error (the
row cannot be checked: no response, no reference, unusable tests; ``error`` says why).
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from longcot.records import add_lineage, json_field
from longcot.verify.code import check_code, code_answer
from longcot.verify.config import VerifyConfig, VerifyLineage
from longcot.verify.gym import gym_answer
from longcot.verify.math import final_answer, same_string
from longcot.verify.mcq import choice_letter, extract_choice, letters_match
from longcot.traces import ParsedTrace, last_boxed, parse_trace
from longcot.verify.pool import CheckPool, shared_pool

VERDICTS = ("correct", "incorrect", "no_answer", "timeout", "error")


@dataclass
class _Check:
    verdict: str | None = None
    predicted: str | None = None
    checker: str | None = None
    how: str | None = None
    error: str | None = None
    detail: str | None = None


def match_answers(pairs: list[tuple[str | None, str | None]], timeout_s: float = 5.0, *,
                  pool: CheckPool | None = None, workers: int | None = None) -> list[bool | None]:
    """Whether each ``(predicted, reference)`` pair matches mathematically; None when its check timed out
    or failed. Safe on any input: math-verify runs in the checker pool, each pair bounded by ``timeout_s``."""
    # the cheap string check first; math-verify only for the pairs it leaves open
    results: list[bool | None] = [p is not None and r is not None and same_string(p, r) for p, r in pairs]
    todo = [i for i, (p, r) in enumerate(pairs) if not results[i] and p is not None and r is not None]
    if todo:
        checker = pool or shared_pool(workers, timeout_s)
        outcomes = checker.run("math", [(pairs[i][0], pairs[i][1]) for i in todo], timeout_s=timeout_s)
        for index, outcome in zip(todo, outcomes):
            results[index] = bool(outcome.value) if outcome.status == "ok" else None
    return results


def verify_records(rows: list[dict], config: VerifyConfig | None = None, *, pool: CheckPool | None = None,
                   sandbox=None) -> list[dict]:
    """Rows with ``thought``, ``solution``, ``markers``, ``truncated``, ``predicted_answer``, ``verdict``,
    ``correct`` (and ``error`` when the check could not decide) filled, plus a ``verify`` lineage entry.

    Dispatches on ``domain`` (math when missing). Never raises for a bad row: its verdict says what happened.
    """
    cfg = config or VerifyConfig()
    started = time.perf_counter()
    out = [dict(row) for row in rows]
    checks = [_Check() for _ in out]
    pooled: dict[str, list[tuple[int, Any]]] = {"math": [], "gym": []}  # check name -> (row index, payload)
    code_jobs: list[tuple[int, str | None, Any]] = []
    for index, row in enumerate(out):
        parsed = parse_trace(row.get("response"), row.get("finish_reason"))
        row.update(thought=parsed.thought, solution=parsed.solution, markers=parsed.markers,
                   truncated=parsed.truncated)
        check = checks[index]
        domain = row.get("domain") or "math"
        if row.get("response") is None:
            check.verdict, check.error = "error", "no response to verify"
        elif domain == "math":
            _plan_math(row, parsed, check, index, pooled["math"])
        elif domain == "mcq":
            _plan_letter(row.get("reference_answer"), parsed, check)
        elif domain == "code":
            check.checker = "sandbox"
            check.predicted = code_answer(parsed)
            code_jobs.append((index, check.predicted, _tests(row)))
        elif domain == "gym":
            _plan_gym(row, parsed, check, index, pooled["gym"])
        else:
            check.verdict, check.error = "error", f"unknown domain {domain!r} (expected math, mcq, code or gym)"
    for name, jobs in pooled.items():
        if jobs:
            checker = pool or shared_pool(cfg.pool_size(), cfg.timeout_s)
            outcomes = checker.run(name, [payload for _, payload in jobs], timeout_s=cfg.timeout_s)
            for (index, _), outcome in zip(jobs, outcomes):
                _settle(checks[index], outcome, gym=name == "gym")
    if code_jobs:
        _run_code(code_jobs, checks, cfg, sandbox)
    seconds = round(time.perf_counter() - started, 3)
    for index, (row, check) in enumerate(zip(out, checks)):
        verdict = check.verdict or "error"
        row.update(predicted_answer=check.predicted, verdict=verdict, correct=verdict == "correct", error=check.error)
        detail = {"verdict": verdict, "checker": check.checker, "how": check.how, "batch_seconds": seconds}
        if check.detail:
            detail["detail"] = check.detail
        out[index] = add_lineage(row, VerifyLineage(**detail))
    return out


def _tests(row: dict) -> Any:
    try:
        return json_field(row, "tests")
    except ValueError:
        return None


def _plan_math(row: dict, parsed: ParsedTrace, check: _Check, index: int, jobs: list) -> None:
    reference = row.get("reference_answer")
    if choice_letter(reference):  # "(C)" in a math set: a multiple-choice question
        _plan_letter(reference, parsed, check)
        return
    answer = final_answer(parsed)
    check.predicted, check.how, check.checker = answer.text, answer.how, "math-verify"
    if answer.text is None:
        check.verdict = "no_answer"
    elif reference is None or not str(reference).strip():
        check.verdict, check.error = "error", "no reference answer to check against"
    elif same_string(answer.text, reference):
        check.verdict, check.checker = "correct", "string"
    else:
        jobs.append((index, (answer.text, str(reference))))


def _plan_letter(reference: str | None, parsed: ParsedTrace, check: _Check) -> None:
    check.checker = "letter"
    check.predicted = extract_choice(parsed.solution) if parsed.solution.strip() else None
    if check.predicted is None:
        # an unfinished thought answers only with \boxed{}: a letter it mentions is still being weighed
        boxed = last_boxed(parsed.thought)
        thought = parsed.thought if parsed.thought_closed else (f"\\boxed{{{boxed}}}" if boxed else "")
        check.predicted = extract_choice(thought)
    if check.predicted is None:
        check.verdict = "no_answer"
    elif choice_letter(reference) is None:
        check.verdict, check.error = "error", f"reference {reference!r} is not a choice letter"
    else:
        check.verdict = "correct" if letters_match(check.predicted, reference) else "incorrect"


def _plan_gym(row: dict, parsed: ParsedTrace, check: _Check, index: int, jobs: list) -> None:
    tests = _tests(row)
    check.checker = "reasoning_gym"
    check.predicted = gym_answer(parsed)
    if not isinstance(tests, dict) or tests.get("kind") != "reasoning_gym" or "entry" not in tests:
        check.verdict, check.error = "error", "gym row needs tests {kind: reasoning_gym, task, entry}"
    elif check.predicted is None:
        check.verdict = "no_answer"
    else:
        task = tests.get("task") or tests["entry"].get("metadata", {}).get("source_dataset")
        jobs.append((index, (task, check.predicted, tests["entry"])))


def _settle(check: _Check, outcome, gym: bool) -> None:
    """The verdict of a pooled check: math-verify's judgement, or a reasoning-gym score (1 is correct)."""
    if outcome.status == "ok":
        check.verdict = "correct" if (outcome.value >= 1.0 if gym else outcome.value) else "incorrect"
        if gym:
            check.detail = f"score {outcome.value:g}"
    elif outcome.status == "timeout":
        check.verdict, check.error = "timeout", outcome.error
    else:
        check.verdict, check.error = "error", f"{check.checker}: {outcome.error}"


def _run_code(jobs: list, checks: list[_Check], cfg: VerifyConfig, sandbox) -> None:
    from longcot.verify.sandbox import Sandbox

    box = sandbox or Sandbox(cfg.sandbox)
    workers = cfg.pool_size() or os.cpu_count() or 1
    with ThreadPoolExecutor(max_workers=workers) as executor:
        results = executor.map(lambda job: check_code(job[1], job[2], box), jobs)
        for (index, _, _), result in zip(jobs, results):
            check = checks[index]
            check.verdict, check.detail = result.verdict, result.detail
            check.error = result.detail if result.verdict in ("timeout", "error") else None
