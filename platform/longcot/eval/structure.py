"""``structure_rate``: does a model's answer have the teacher's long-CoT structure?

An answer *has the structure* when both hold:

1. **It opens a thought section in the teacher's marker convention**: after leading whitespace, the answer
   starts with ``<|begin_of_thought|>`` (``sky``, the Sky-T1 convention) or ``<think>`` (``think``, R1's).
   With the ``think`` convention a chat template may already have opened the thought in the prompt; the
   eval stage's prompts never do, so the answer itself must open it.
2. **Its thought makes at least one reflection or verification move**: a phrase from ``REFLECTION_MOVES``,
   matched as whole words in the text after the opening marker (up to the closing marker when there is
   one). The moves are the reflection keywords Li et al. 2025 list (``perturb.config.REFLECTION_KEYWORDS``,
   the very ones the ``remove_keywords`` perturbation removes), plus the common ways a long-CoT teacher
   stops to check: "let me double-check/confirm/make sure", "to verify", "that checks out", "on second
   thought". Case is ignored, except for "But", which counts only capitalised (starting a sentence, as a
   reconsideration: "But the problem asks for..."), not as the conjunction inside a sentence.

Only the generated text counts, within the generation budget the evaluation sets (``max_tokens``): an answer
cut off before its first reflection does not have the structure. A model that was never taught the
convention does not meet the first condition by chance: SmolLM2-135M-Instruct, asked the held-out problems
with the student's prompt, opens none of its answers with a thought marker (see bench/RESULTS.md).
"""

from __future__ import annotations

import re

from longcot.perturb.config import REFLECTION_KEYWORDS
from longcot.traces import SKY_MARKERS, THINK_MARKERS

MARKERS = {"sky": SKY_MARKERS[:2], "think": THINK_MARKERS}  # convention: (opening, closing) marker

CASED = ("But",)  # keywords that count only as written (capitalised)
REFLECTION_MOVES = tuple(REFLECTION_KEYWORDS) + (
    # checking and reconsidering, as long-CoT teachers phrase it
    "Let me double-check", "Let me confirm", "Let me make sure", "Let me recheck", "Let me re-examine",
    "Let me reconsider", "double-check", "to verify", "to confirm", "verify this", "check this",
    "that checks out", "on second thought", "I should check", "I should verify", "I should double-check",
    "I should make sure",
)


def _pattern(moves: tuple[str, ...]) -> str:
    return "|".join(re.escape(m) for m in sorted(moves, key=len, reverse=True))


_MOVES = re.compile(r"\b(?:(?i:" + _pattern(tuple(m for m in REFLECTION_MOVES if m not in CASED)) + r")|"
                    + _pattern(CASED) + r")\b")


def opens_thought(text: str | None, markers: str) -> bool:
    """Whether ``text`` starts (after whitespace) with the opening marker of the ``markers`` convention."""
    if markers not in MARKERS:
        raise ValueError(f"unknown marker convention {markers!r}; allowed: {', '.join(MARKERS)}")
    return (text or "").lstrip().startswith(MARKERS[markers][0])


def thought_of(text: str | None, markers: str) -> str:
    """The thought an answer opened (after its opening marker, up to its closing one); '' when it opened none."""
    if not opens_thought(text, markers):
        return ""
    opener, closer = MARKERS[markers]
    return (text or "").lstrip()[len(opener):].partition(closer)[0]


def reflection_moves(text: str) -> list[str]:
    """The reflection or verification moves found in ``text``, in order (lower case)."""
    return [m.group(0).lower() for m in _MOVES.finditer(text or "")]


def has_structure(text: str | None, markers: str) -> bool:
    """Both conditions of the module docstring."""
    return bool(reflection_moves(thought_of(text, markers)))
