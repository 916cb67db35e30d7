"""reasoning-gym problems: each carries its generator entry, scored by the task's own verifier.

The record's ``tests`` holds ``{"kind": "reasoning_gym", "task": NAME, "entry": {...}}`` (the problems
stage writes it); ``reasoning_gym.get_score_answer_fn(task)(answer, entry)`` returns a score in [0, 1].
"""

from __future__ import annotations

import re
from functools import lru_cache

from longcot.verify.math import final_answer

_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)


def gym_answer(parsed) -> str | None:
    """The answer of a parsed trace: the last ``<answer>...</answer>`` (reasoning-gym's convention), else
    the math final answer (``\\boxed{}``, an answer phrase, the concluding statement)."""
    for region in (parsed.solution, parsed.thought):
        tagged = _ANSWER_TAG.findall(region)
        if tagged and tagged[-1].strip():
            return tagged[-1].strip()
    return final_answer(parsed).text


@lru_cache(maxsize=None)
def _scorer(task: str):
    import reasoning_gym

    return reasoning_gym.get_score_answer_fn(task)


def check_gym(payload: tuple[str, str, dict]) -> float:
    """Pool check: ``(task, answer, entry)`` -> the task's score for ``answer``."""
    task, answer, entry = payload
    return float(_scorer(task)(answer, entry))
