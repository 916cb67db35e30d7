"""Scoring checked by construction: a benchmark's own answers must score 100%, shuffled ones near chance.

For every problem of a benchmark, the reference answer (for code, the canonical solution) is written
back as a response in the form the benchmark's instruction asks for, and scored as the eval stage scores
(by the verify stage's actors on Ray): anything under 100% is a bug in the registry entry (its field
mapping or ``answer_extract``) or in verification. Then each problem gets another problem's answer (a
derangement: never its own) and must score near chance, i.e. no higher than the share of problems whose
answers coincide textually, plus a small allowance for answers equal only mathematically. A user adding a
benchmark runs ``longcot eval-check NAME`` to see both numbers.
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from pathlib import Path

from pydantic import BaseModel, computed_field

from longcot import records
from longcot.eval.metrics import answer_key
from longcot.problems import benchmarks
from longcot.verify.config import VerifyConfig

RESPONSE_THOUGHT = "The reference answer, written back as a response to check the scorer."


def reference_response(problem: dict) -> str:
    """A response whose final answer is ``problem``'s reference.

    Math and multiple choice: a ``<think>`` section, then the answer in ``\\boxed{}``. Code: one fenced
    Python block with the function's prompt and canonical solution.
    """
    if (problem.get("domain") or "math") == "code":
        tests = records.json_field(problem, "tests") or {}
        program = (tests.get("prompt") or "") + (tests.get("canonical_solution") or "")
        return f"<think>\n{RESPONSE_THOUGHT}\n</think>\n\n```python\n{program}\n```\n"
    return f"<think>\n{RESPONSE_THOUGHT}\n</think>\n\nThe final answer is $\\boxed{{{problem['reference_answer']}}}$."


def derangement(count: int, seed: int) -> list[int]:
    """A permutation with no fixed point (``perm[i] != i``) for ``count >= 2``: a shuffled cycle."""
    order = list(range(count))
    random.Random(seed).shuffle(order)
    following = dict(zip(order, order[1:] + order[:1]))  # each to the next one round the cycle
    return [following[i] for i in range(count)]


def _answer_text(row: dict) -> str | None:
    if row.get("domain") == "code":
        tests = records.json_field(row, "tests") or {}
        return tests.get("canonical_solution")
    return answer_key(row.get("reference_answer"))


class SelfCheck(BaseModel):
    benchmark: str
    problems: int
    reference_accuracy: float
    shuffled_accuracy: float
    chance: float  # share of problems whose shuffled answer coincides textually with their own
    allowance: float
    failures: list[dict] = []  # reference answers that did not score correct
    nodes: list[str] = []  # the Ray nodes whose verify actors scored
    seconds: float = 0.0

    @computed_field  # written with the numbers (``model_dump``)
    @property
    def ok(self) -> bool:
        return self.reference_accuracy == 1.0 and self.shuffled_accuracy <= self.chance + self.allowance


def check_benchmark(spec: benchmarks.BenchmarkSpec, *, sample: int | None = None, seed: int = 0,
                    allowance: float = 0.02) -> SelfCheck:
    """Score the benchmark's references and a derangement of them as eval scores: on Ray, by the verify
    stage's actors with the default verify settings (``verify_on_ray``; a local Ray unless ``RAY_ADDRESS``
    names one).

    ``sample``: check that many problems drawn at random (seeded) from the whole file instead of all.
    """
    from longcot.verify.stage import verify_on_ray

    started = time.perf_counter()
    problems = list(benchmarks.iter_problems(spec))
    if sample is not None and sample < len(problems):
        keep = sorted(random.Random(seed).sample(range(len(problems)), sample))
        problems = [problems[i] for i in keep]
    if len(problems) < 2:
        raise ValueError(f"{spec.name}: a self-check needs at least 2 problems")
    perm = derangement(len(problems), seed)
    own = [{**records.for_sample(p, 0), "response": reference_response(p)} for p in problems]
    shuffled = [{**records.for_sample(p, 1), "response": reference_response(problems[perm[i]])}
                for i, p in enumerate(problems)]
    with tempfile.TemporaryDirectory(prefix="longcot-eval-check-") as tmp:
        rejected = Path(tmp) / "rejected.jsonl"
        scored, result = verify_on_ray(own + shuffled, VerifyConfig(), stage="eval-check", rejected=rejected,
                                       progress=False)
        # a row whose check raised was rejected (in order): it scored nothing, a failure when it is a reference
        reasons = iter(json.loads(line)["reason"] for line in rejected.open(encoding="utf-8"))
        scored = [row if row is not None else {**asked, "verdict": "rejected", "error": next(reasons)}
                  for asked, row in zip(own + shuffled, scored)]
    own_v, shuffled_v = scored[:len(own)], scored[len(own):]
    coincide = sum(_answer_text(p) == _answer_text(problems[perm[i]]) for i, p in enumerate(problems))
    failures = [
        {"problem_id": r["problem_id"], "reference_answer": r["reference_answer"],
         "predicted_answer": r.get("predicted_answer"), "verdict": r.get("verdict"), "error": r.get("error")}
        for r in own_v if not r.get("correct")
    ]
    return SelfCheck(
        benchmark=spec.name,
        problems=len(problems),
        reference_accuracy=sum(bool(r.get("correct")) for r in own_v) / len(problems),
        shuffled_accuracy=sum(bool(r.get("correct")) for r in shuffled_v) / len(problems),
        chance=coincide / len(problems),
        allowance=allowance,
        failures=failures,
        nodes=result.nodes,
        seconds=round(time.perf_counter() - started, 2),
    )
