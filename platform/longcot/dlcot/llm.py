"""The ``llm`` segmenter: a judge model labels the paragraphs of a thought; its labels are re-anchored
onto the original text.

The judge sees the problem and the thought as numbered paragraphs and answers one line per segment::

    1-1 restatement
    4-9 exploration approach=1 cluster=1
    15-18 verification cluster=1 confirm
    19-19 conclusion

(a line may also name a segment by quoting its first words instead of numbers). ``parse_labels`` reads
whatever lines it can; ``anchor_labels`` maps them onto character spans of the original thought and
``segment_llm`` builds the ``Segmentation``: approach outcomes are still checked against the reference
(the verify stage's answers), clusters and confirm/fault come from the judge. The judge's segmentation is
kept only if its segments, joined, reproduce the thought (``check_segmentation``); a reply that cannot be
parsed or fails the check raises ``JudgeOutputError``, and ``segmenter.LLMSegmenter`` falls back to
``rules`` (the segmentation's ``notes`` say so).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from longcot.dlcot.config import JudgeConfig
from longcot.dlcot.rules import FAULT, Step, last_answer, opens_another_method, read_steps
from longcot.dlcot.structure import (
    KINDS,
    Approach,
    ErrorSpan,
    Segmentation,
    Span,
    VerificationUnit,
    check_segmentation,
)

MAX_JUDGE_STEPS = 150  # more paragraphs than this do not fit a small judge's context: rules instead

_SYSTEM = (
    "You analyse the structure of a long chain of reasoning written by a maths solver. You never solve the "
    "problem yourself; you only label the paragraphs of the reasoning you are shown."
)
_INSTRUCTIONS = """Label the reasoning above. Write one line per segment, in order, covering every paragraph exactly once:
FIRST-LAST KIND [approach=N] [cluster=N] [confirm|fault] [error=P]

KIND is one of:
- restatement: the paragraphs that restate the problem (at the start)
- understanding: a first high-level analysis before any work (optional)
- exploration: an approach to the problem; the exploration ends at the paragraph that first reaches a final answer. Start a new approach (approach=2, 3, ...) where the method changes, for example at "Alternatively" or "Another way".
- verification: one check or alternative method after the first final answer; add confirm if it agrees with the answer, fault if it finds a mistake
- conclusion: the closing paragraphs that state the answer (at the end)
Give two approaches or verifications the same cluster number when they use the same method. Write error=P when paragraph P of a segment is wrong and corrected later.

Example for a reasoning of 19 paragraphs:
1-1 restatement
2-3 understanding
4-9 exploration approach=1 cluster=1
10-14 exploration approach=2 cluster=2
15-18 verification cluster=1 confirm
19-19 conclusion

Now the lines for the reasoning above, and nothing else:"""

_KIND = r"(restatement|understanding|exploration|verification|conclusion)"
_RANGE_LINE = re.compile(
    r"^\W*(?:paragraphs?\s*)?\[?(\d+)\]?\s*(?:(?:-|–|—|to|\.\.)\s*\[?(\d+)\]?)?\s*[:.)\-]?\s*" + _KIND + r"\b(.*)$",
    re.IGNORECASE,
)
_QUOTE_LINE = re.compile(r"^\W*" + _KIND + r"\b[^\"“]*[\"“]([^\"”]{8,})[\"”]?(.*)$", re.IGNORECASE)
_ATTR_NUMBER = re.compile(r"\b(approach|cluster|error)\s*[=:#]?\s*(\d+)", re.IGNORECASE)
_VERDICT = re.compile(r"\b(confirm|fault)", re.IGNORECASE)


class JudgeOutputError(ValueError):
    """The judge's reply cannot be turned into a segmentation; ``args[0]`` says why."""


@dataclass(frozen=True)
class Label:
    """One line of the judge's reply: paragraphs ``first..last`` (1-based, inclusive) are a ``kind``."""

    first: int
    last: int
    kind: str
    approach: int | None = None
    cluster: int | None = None
    verdict: str | None = None  # confirm | fault
    error: int | None = None


def judge_messages(problem: str | None, steps: list[str], max_step_chars: int) -> list[dict]:
    """Chat messages asking the judge to label ``steps`` (each cut to ``max_step_chars``)."""
    shown = []
    for number, text in enumerate(steps, start=1):
        text = " ".join(text.split())
        if len(text) > max_step_chars:
            text = text[: max_step_chars - 3] + "..."
        shown.append(f"[{number}] {text}")
    user = f"Problem: {(problem or '').strip()}\n\nReasoning, {len(steps)} paragraphs:\n" + "\n".join(shown)
    return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": user + "\n\n" + _INSTRUCTIONS}]


def _attributes(rest: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name, number in _ATTR_NUMBER.findall(rest):
        found.setdefault(name.lower(), int(number))
    verdict = _VERDICT.search(rest)
    if verdict:
        found["verdict"] = verdict.group(1).lower()
    return found


def parse_labels(reply: str, steps: list[Step]) -> list[Label]:
    """The labels in the judge's ``reply``, anchored on paragraph numbers of ``steps``.

    Lines that are not labels are ignored; a line that quotes text instead of numbering paragraphs is
    anchored on the paragraph holding that text. Raises ``JudgeOutputError`` when no line is a label.
    """
    labels: list[Label] = []
    quoted: list[tuple[int, str, dict]] = []
    for line in reply.splitlines():
        m = _RANGE_LINE.match(line)
        if m:
            first, last = int(m.group(1)), int(m.group(2) or m.group(1))
            labels.append(Label(first, last, m.group(3).lower(), **_attributes(m.group(4))))
            continue
        q = _QUOTE_LINE.match(line)
        if q:
            where = _find_paragraph(q.group(2), steps)
            if where is not None:
                quoted.append((where, q.group(1).lower(), _attributes(q.group(3))))
    if quoted and not labels:
        # quoted anchors mark where segments start: each runs to the next one
        quoted.sort(key=lambda item: item[0])
        ends = [where for where, _, _ in quoted[1:]] + [len(steps)]
        labels = [Label(where + 1, max(where + 1, last), kind, **attrs)
                  for (where, kind, attrs), last in zip(quoted, ends)]
    if not labels:
        raise JudgeOutputError("judge reply has no segment labels")
    return labels


def _find_paragraph(quote: str, steps: list[Step]) -> int | None:
    needle = " ".join(quote.split()).lower()[:60]
    return next((i for i, step in enumerate(steps) if needle and needle in " ".join(step.text.split()).lower()), None)


def anchor_labels(labels: list[Label], steps: list[Step]) -> list[Label]:
    """Labels that fit the thought, in order and without overlaps: ranges outside the thought are dropped,
    overlaps trimmed; a range entirely before the previous one, or kinds out of their order, is an error.
    Paragraphs no label covers stay uncovered (the segmentation check sees them)."""
    n = len(steps)
    kept: list[Label] = []
    cursor = 0  # paragraphs before this (1-based: <= cursor) are taken
    for label in labels:
        first, last = label.first, min(label.last, n)
        if first < 1 or first > n or last < first:
            continue
        if last <= cursor:
            raise JudgeOutputError(f"judge labels are out of order (paragraphs {first}-{last} after {cursor})")
        first = max(first, cursor + 1)  # an overlap: the earlier label keeps the shared paragraphs
        kept.append(replace(label, first=first, last=last))
        cursor = last
    if not kept:
        raise JudgeOutputError("no judge label falls inside the thought")
    order = [KINDS.index(label.kind) for label in kept]
    if order != sorted(order):
        raise JudgeOutputError("judge labels are out of order (" + ", ".join(label.kind for label in kept) + ")")
    if not any(label.kind == "exploration" for label in kept):
        raise JudgeOutputError("judge labelled no exploration")
    return kept


def segment_llm(thought: str, *, problem: str | None, matcher, reply: str, check_ratio: float = 0.90,
                check_jaccard: float = 0.95) -> Segmentation:
    """The ``Segmentation`` the judge's ``reply`` describes for ``thought``.

    Raises ``JudgeOutputError`` when the reply cannot be parsed or anchored, or when the anchored segments
    fail the segmentation check against the thought.
    """
    steps = read_steps(thought, matcher, problem)
    labels = anchor_labels(parse_labels(reply, steps), steps)
    covered = [thought[steps[label.first - 1].text_start : steps[label.last - 1].end] for label in labels]
    check = check_segmentation(thought, covered, min_ratio=check_ratio, min_jaccard=check_jaccard)
    if not check.passed:
        raise JudgeOutputError(f"segmentation check failed (quick_ratio {check.quick_ratio}, jaccard {check.jaccard})")
    return _build(thought, steps, labels)


def _build(thought: str, steps: list[Step], labels: list[Label]) -> Segmentation:
    """The segmentation that anchored ``labels`` (in order, not overlapping) describe: every paragraph belongs
    to the label that covers it, or else to the one before it (the first label also takes any before it)."""
    spans: dict[str, Span] = {}
    approaches: list[Approach] = []
    units: list[VerificationUnit] = []
    current: tuple[str | None, bool] = (None, False)
    starts = [0] + [label.first - 1 for label in labels[1:]]  # step indices: each label's group is [a, b)
    for label, a, b in zip(labels, starts, starts[1:] + [len(steps)]):
        group = steps[a:b]
        start, end = group[0].start, group[-1].end
        answer, correct = last_answer(group)
        errors = ()
        if label.error is not None and a < label.error <= b:
            e = steps[label.error - 1]
            errors = (ErrorSpan(e.start, e.end),)
        if label.kind in ("restatement", "understanding", "conclusion"):
            spans[label.kind] = Span(spans[label.kind].start if label.kind in spans else start, end)
        elif label.kind == "exploration":
            if approaches and label.approach is not None and approaches[-1].index == label.approach:
                prev = approaches.pop()  # two ranges of one approach
                answer, correct = (answer, correct) if answer is not None else (prev.answer, prev.correct)
                start, errors = prev.start, prev.errors + errors
            outcome = "correct" if correct else ("incorrect" if answer is not None else "incomplete")
            approaches.append(Approach(len(approaches) + 1, start, end, answer, outcome, label.cluster, errors))
            current = (answer, correct) if answer is not None else current
        else:
            fault = label.verdict == "fault" or (label.verdict is None and any(FAULT.search(s.text) for s in group))
            if answer is None:
                answer, correct = current[0], current[1] and not fault
            else:
                current = (answer, correct)
            units.append(VerificationUnit(len(units) + 1, start, end, "fault" if fault else "confirm", answer, correct,
                                          opens_another_method(steps[a]), label.cluster, errors))
    if approaches and any(m.cluster is None for m in [*approaches, *units]):
        # the judge clustered only some members: cluster all of them by the rules instead
        approaches = [replace(a, cluster=None) for a in approaches]
        units = [replace(u, cluster=None) for u in units]
    return Segmentation(
        thought=thought,
        restatement=spans.get("restatement"),
        understanding=spans.get("understanding"),
        approaches=tuple(approaches),
        units=tuple(units),
        conclusion=spans.get("conclusion"),
        segmenter="llm",
    )


def judge_generate_config(config: JudgeConfig):
    """The judge as a generate-stage config: the same engines (hf, openai), built by the same factory."""
    from longcot.generate.config import GenerateConfig

    return GenerateConfig(backend=config.backend, model=config.model, openai=config.openai,
                          batch_size=config.batch_size, system_prompt="")

