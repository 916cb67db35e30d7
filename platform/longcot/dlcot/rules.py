"""The ``rules`` segmenter: fast, offline, deterministic.

It reads the thought paragraph by paragraph (the verify stage's ``split_steps``) and decides with:

- position: the first paragraph restates the problem, the last ones conclude;
- discourse markers: "Alternatively" / "Another way" / "Maybe there's a better way" start a new approach,
  "Wait" / "Let me double-check" / "Just to be sure" start a verification unit, "that can't be right" /
  "I made a mistake" mark a fault;
- intermediate answers: the first paragraph that states the reference answer (checked with math-verify,
  through ``ReferenceMatcher``) or commits to a final answer is the first answer; so is a paragraph whose
  result equals the reference and that a check follows ("\\[ x = 83 \\]", then "Wait, that seems
  straightforward. But let me double-check"), though it says no "therefore" -- unless that result is what
  some other quantity comes to ("n + 13 = 81" when the problem asks for a term) or sits inside a formula
  ("(-1)^k"). The exploration ends at the first check or other method after the first answer.
- verification units: a check runs on until it comes to a result (an answer, a verdict such as "Yes, that
  checks out", a fault, or giving up a method it tried); the next check or method after that opens the
  next unit, so "Alternatively, ..." inside a check is more of the same check. A unit that opens with
  another method solves the problem another way; one that gives up before an answer reaches none.

Every piece is a whole paragraph (plus the whitespace after it), except an error span, which may end
inside a paragraph after the sentence that flags the fault. The pieces tile the thought.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from longcot.dlcot.answers import ReferenceMatcher, normal_form, result_values, stated_answers
from longcot.dlcot.structure import (
    CALCULATION,
    COMPUTATION,
    WORKING,
    Approach,
    ErrorSpan,
    Segmentation,
    Span,
    VerificationUnit,
)
from longcot.traces import split_steps

_LEAD = r"^\W*(?:(?:wait|hmm+|okay|ok|well|but|so|now|actually|oh|alright|also|and|or)\b[,.!]?\s*(?:a minute[,.!]?\s*|a second[,.!]?\s*)?)*"
NEW_APPROACH = re.compile(
    _LEAD
    + r"(?:alternatively|another (?:way|approach|method|idea|strategy)|"
    r"(?:maybe|perhaps) (?:there'?s|there is) an? (?:better|simpler|different|easier|smarter|quicker|more direct) "
    r"(?:way|approach|method)|"
    r"(?:let me|let's|let us|i'?ll|i (?:could|can|should|might|will)) (?:try|use|consider|take|think of) "
    r"(?:a |an )?(?:different|another|new|alternative|other)|"
    r"(?:maybe|perhaps) (?:i|we) (?:should|can|could) (?:try|use|approach|think about (?:it|this) differently)|"
    r"instead\b|on second thought|"
    r"(?:let me|let's) (?:start over|start again|rethink|reconsider|approach (?:this|it) differently)|"
    r"an? (?:better|different|simpler|cleaner|easier) (?:way|approach|method))",
    re.IGNORECASE,
)
CHECK = re.compile(
    _LEAD
    + r"(?:(?:let me|let's|let us|i(?:'ll| will| should| can| could| want to| need to| might)?)\s+(?:just\s+|also\s+|quickly\s+)?"
    r"(?:double[- ]?check|check|verify|confirm|make sure|see if|re-?examine|re-?check|re-?calculate|"
    r"re-?compute|plug|test|think again|go back|look at (?:this|it|that) again|review|recap|summarize|"
    r"consider (?:if|whether|another)|cross[- ]?check)|"
    r"(?:just )?to (?:double[- ]?check|check|verify|confirm|be (?:sure|safe|thorough|certain|extra)|make sure)|"
    r"is there (?:any|a|another|anything)|"
    r"is (?:this|that|it) (?:correct|right|the (?:final |right |correct )?answer)|"
    r"did (?:i|we) (?:make|miss|do|get|forget|overlook)|"
    r"(?:let me|let's|i should|i need to|i want to) (?:also )?(?:think|consider) (?:again|if|whether|about whether|"
    r"(?:about )?(?:any|other|another|the possibility))|(?:are|is) there (?:any )?other (?:possibilit|solution|value|case)|"
    r"(?:i|we) can (?:also )?(?:verify|check|confirm|double[- ]?check)|double[- ]?check|"
    r"(?:verifying|checking|confirming|verification)\b|"
    r"another way|alternatively)",
    re.IGNORECASE,
)
# another method named anywhere in a paragraph's opening ("Let me see if there's another way to ..."); not a
# plural: "60 different ways to assign", "consistent across different methods" count or sum up
ALTERNATIVE = re.compile(
    r"\b(?:another|other|different|alternative) (?:way|approach|method|strategy)\b|\balternatively\b|"
    r"\b(?:is there|there might be|there may be|there could be) an? (?:faster|quicker|simpler|easier|better|shorter|"
    r"smarter|more direct|more efficient|cleverer) (?:way|approach|method)\b",
    re.IGNORECASE,
)
INTERJECTION = re.compile(r"^\W*(?:wait|hold on|hmm+|but wait)\b", re.IGNORECASE)
FAULT = re.compile(
    r"(?:that|this|it|which)(?:'s| is| was) (?:wrong|incorrect|not (?:right|correct|possible|valid))|"
    r"(?:that|this|it) can(?:'t|not) be (?:right|correct|true)|"
    r"doesn'?t (?:seem right|match|make sense|add up|work|agree)|does not (?:match|make sense|add up|work)|"
    r"\bi (?:must|might|may)(?: have)? made an? (?:mistake|error)|\b(?:maybe|perhaps) i made an? (?:mistake|error)|"
    r"\bi made an? (?:mistake|error)|\bi (?:messed up|miscalculated|misread|misapplied|miscounted)|"
    r"\bcontradict|\b(?:my|the) (?:mistake|error) (?:is|was)|"
    r"not valid\b|isn'?t (?:right|correct|possible|valid)|let me correct",
    re.IGNORECASE,
)
CLOSING = re.compile(
    r"^\W*(?:(?:so|therefore|thus|hence|in conclusion|overall|finally|all in all|in summary)[, ]+"
    r"(?:i think )?(?:the|my) (?:final )?(?:answer|result|solution)|"
    r"i think (?:that'?s|this is|i'?m|i'?ve|it'?s|the (?:final )?answer|that settles|we'?re|i have)|"
    r"i'?m (?:confident|sure|pretty (?:sure|confident)|satisfied)|"
    r"(?:\*\*)?final answer|\\\[\s*\\boxed|\\boxed|\$\$?\s*\\boxed|"
    r"that'?s (?:the|my) (?:final )?answer|the (?:final )?answer is)",
    re.IGNORECASE,
)
# a search for another method that comes to nothing
GIVE_UP = re.compile(
    r"\b(?:stick (?:with|to)|go back to|fall back (?:on|to))\b|\bnot sure (?:if|whether|how) (?:that|this|it) "
    r"helps|\b(?:doesn'?t|does not|don'?t) (?:seem|look)(?: to be)? (?:immediately |very |particularly )?"
    r"(?:helpful|useful|easier|simpler|productive)|\b(?:overkill|more complicated than necessary)\b",
    re.IGNORECASE,
)
# a check's verdict on what it checked
VERDICT = re.compile(
    r"\b(?:that|this|it|which|everything|all)(?:'s| is| seems| looks| appears| all)?(?: to be)? (?:all )?"
    r"(?:correct|right|consistent|accurate|fine|good|valid|confirmed)\b|\b(?:which|that|this|it) "
    r"(?:matches|agrees|confirms|checks out)|\bchecks out\b|^\W*(?:so,? )?yes\b|\bindeed\b|\bconfirms?\b|\bas expected\b|"
    r"^\W*(?:seems|looks) (?:correct|right|good|fine|consistent)|\bi think (?:this|that|it)(?:'s| is)\b",
    re.IGNORECASE,
)
FINAL_CUE = re.compile(r"\\boxed|final answer|the answer (?:is|should be|would be)|answer:", re.IGNORECASE)
UNDERSTANDING = re.compile(
    r"(?:\bfirst\b|\bto (?:solve|find|start|approach|begin)|let'?s (?:see|start|think|recall|break|understand|begin)|"
    r"\bi (?:need to|should|recall|remember|know|think|want to|have to)|\brecall\b|\bremember\b|\bunderstand|"
    r"\bapproach\b|the (?:problem|question) (?:is|asks|says|wants|gives)|\bwe need\b|\bthe goal\b|\bkey\b)",
    re.IGNORECASE,
)
# where a later clause of a paragraph's opening begins: after a sentence (and a closing quote), or at ", but"
_CLAUSE = re.compile(r"(?<=[.!?:])[\"')]*\s+|,\s+(?=but\b)", re.IGNORECASE)
MAX_ANNOUNCEMENT_CHARS = 200
_CHECK_WORDS = re.compile(r"\b(?:check|verify|verifying|confirm|double[- ]?check|make sure)\b", re.IGNORECASE)
ANNOUNCING = re.compile(
    r"\?\W*$|\b(?:let me|let's|let us|i should|i'?ll|i will|i need to|i want to|(?:maybe|perhaps) i (?:can|could|should))"
    r"\s+(?:just\s+|also\s+|quickly\s+)?(?:double[- ]?check|check|verify|confirm|make sure|see|try|think|look|consider|"
    r"approach)|\b(?:maybe|perhaps) there(?:'s| is) (?:a|an|another|any)\b",
    re.IGNORECASE,
)
_LAST_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"[a-z0-9]+")
_SENTENCE_END = re.compile(r"[.!?](?=\s)|\n")
MAX_UNDERSTANDING_STEPS = 3
MAX_CLOSING_STEPS = 3
MAX_CLOSING_CHARS = 400
MIN_GIVEN_CHARS = 6  # a shorter value ("0", "x+1") found in the problem may still be an answer


class SegmentationError(ValueError):
    """The thought cannot be cut into the DLCoT structure (too few paragraphs, say); the message says why."""


@dataclass
class Step:
    """One paragraph of the thought, with the answers it states and which of them are the reference."""

    start: int  # piece start: the paragraph's first character (0 for the first paragraph)
    end: int  # piece end: the next paragraph's first character (len(thought) for the last)
    text_start: int  # where the paragraph's text begins
    text: str
    answers: list[str]
    hits: list[bool]

    @property
    def states_reference(self) -> bool:
        return any(self.hits)


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def _restates(text: str, problem: str | None) -> bool:
    wanted = {w for w in _words(problem or "") if len(w) > 2}
    return bool(wanted) and len(wanted & _words(text)) / len(wanted) >= 0.5


def _copied_expression(form: str, problem: str) -> bool:
    """An expression (operators or LaTeX, long enough) that appears verbatim in the problem: not an answer.
    A word or an option label copied from the problem ("(E) Hyperbola") still is one."""
    return len(form) >= MIN_GIVEN_CHARS and bool(re.search(r"[=+*/^\\-]", form)) and form in problem


def read_steps(thought: str, matcher: ReferenceMatcher, problem: str | None = None) -> list[Step]:
    """The paragraphs of ``thought`` with the answers each states and whether each is the reference.

    An expression copied from the problem is not an answer, even when it equals the reference (the
    expression to simplify equals its simplification).
    """
    spans = split_steps(thought)
    texts = [thought[a:b] for a, b in spans]
    given = normal_form(problem) if problem else ""
    answers = [[c for c in stated_answers(text, texts[i - 1] if i else None)
                if not _copied_expression(normal_form(c), given)] for i, text in enumerate(texts)]
    verdicts = iter(matcher.matches([c for found in answers for c in found]))
    bounds = [0] + [a for a, _ in spans[1:]] + [len(thought)]  # a piece runs to the next paragraph
    return [Step(bounds[i], bounds[i + 1], a, text, found, [next(verdicts) for _ in found])
            for i, ((a, _), text, found) in enumerate(zip(spans, texts, answers))]


def _fault_end(step: Step) -> int | None:
    """Offset just past the sentence of ``step`` that flags a fault (and the space after it), or None."""
    hit = FAULT.search(step.text[:600])
    if not hit:
        return None
    end = _SENTENCE_END.search(step.text, hit.end())
    rest = step.text[end.end():] if end else ""
    return step.text_start + len(step.text) - len(rest.lstrip())


def _errors_in(steps: list[Step], first: int, last: int) -> tuple[ErrorSpan, ...]:
    """Erroneous spans inside the member made of ``steps[first..last]``: the paragraph before a fault
    flag, through the sentence that flags it. A flag in the member's first paragraph concerns the
    member before it and is not an error of this one."""
    errors: list[ErrorSpan] = []
    for k in range(first + 1, last + 1):
        end, start = _fault_end(steps[k]), steps[k - 1].start
        if end is not None and not (errors and start < errors[-1].end):  # no overlap with the last span
            errors.append(ErrorSpan(start, min(end, steps[k].end)))
    return tuple(errors)


def last_answer(steps: list[Step], *, committed: bool = False) -> tuple[str | None, bool]:
    """What ``steps`` arrive at: ``(answer, states the reference)``.

    The last commitment wins: a paragraph stating the reference, or one committing to another answer
    ("the answer is", ``\\boxed{}``, a closing "Therefore, ..."). Values computed along the way do not
    count (a check that divides 3339 by 21 does not answer 159), unless nothing was committed to: then
    the last value stated, as an answer that does not match; with ``committed``, ``(None, False)``.
    """
    answer, correct = None, False
    for step in steps:
        if step.states_reference:
            answer, correct = step.answers[step.hits.index(True)], True
        elif step.answers and (FINAL_CUE.search(step.text) or CLOSING.search(step.text)):
            answer, correct = step.answers[-1], False
    if answer is None and not committed:
        answer = next((s.answers[-1] for s in reversed(steps) if s.answers), None)
    return answer, correct


def opens_another_method(step: Step) -> bool:
    """Whether ``step`` turns to another method in its opening ("Alternatively", "Another way to see it")."""
    head = step.text[:200]
    return bool(NEW_APPROACH.search(head) or ALTERNATIVE.search(head))


def starts_unit(step: Step) -> bool:
    """Whether ``step`` opens a verification unit: a check, another method, or a flagged fault. An
    interjection may come first and the check a clause later ("Wait, is that it? It seems almost too
    straightforward. Let me double-check."), and so may the verdict on the check before it ("I think that's
    straightforward. But just to be thorough, ...")."""
    head = step.text[:200]
    if CHECK.search(head) or opens_another_method(step):
        return True
    clauses = _CLAUSE.split(head)
    if VERDICT.search(clauses[0]):  # "I think that's straightforward. But just to be thorough, ..."
        return any(CHECK.search(c) or NEW_APPROACH.search(c) for c in clauses[1:3])
    if not INTERJECTION.search(head):
        return False
    return bool(FAULT.search(step.text[:300]) or any(CHECK.search(c) for c in clauses[1:4]))


def _announces(step: Step) -> bool:
    """Whether ``step`` only says that a check or another method is coming ("Let me see if there's another
    way to approach this.", "Wait a minute, is there another way to confirm this?"): short, no value, no
    working, and it ends on the intent or the question, not on a result ("..., which agrees.")."""
    text = step.text.strip()
    if len(text) > MAX_ANNOUNCEMENT_CHARS or WORKING.search(text):
        return False
    return bool(ANNOUNCING.search(_LAST_SENTENCE.split(text)[-1]))


def _arrives(step: Step) -> bool:
    """Whether a check comes to a result in ``step``: it states an answer, gives a verdict ("Yes, that seems
    correct.", "which matches"), finds a fault, or gives up the method it tried ("Perhaps I should stick
    with the first method")."""
    return (_commits(step) or bool(CLOSING.search(step.text)) or bool(VERDICT.search(step.text))
            or bool(FAULT.search(step.text[:600])) or bool(GIVE_UP.search(step.text)))


def _solves_another_way(unit: list[Step]) -> bool:
    """Whether a verification unit solves the problem by another method, rather than re-checking the work: it
    opens with another method (or announces a check, then opens with one), and not with a way to check
    ("Alternatively, I can check by converting back" re-checks)."""
    opening = unit[:2] if len(unit) > 1 and _announces(unit[0]) else unit[:1]
    for step in opening:
        first = _LAST_SENTENCE.split(step.text[:200])[0]
        if opens_another_method(step) and not _CHECK_WORDS.search(first):
            return True
    return False


def _commits(step: Step) -> bool:
    """Whether ``step`` states the reference, or commits to an answer ("the answer is", ``\\boxed{}``)."""
    return step.states_reference or bool(step.answers and FINAL_CUE.search(step.text))


_CHAIN = r"([^\n.;:?!]{1,200}?)\s*=\s*"
_OPERATOR = re.compile(r"[-+*/^×÷]|\\(?:times|cdot|div|frac)")
_VARIABLE = re.compile(r"(?<![A-Za-z\\])[A-Za-z](?![A-Za-z])")


def _intermediate(text: str, value: str, given: str) -> bool:
    """Whether ``value`` is what some other quantity than the asked one comes to: the end of an equation
    (chain) whose left side is an expression in variables ("n + 13 = 81") that the problem does not ask
    about (its text is not in the problem). "x + y + z = 4 + 6 + 12 = 22" answers a problem that asks for
    x + y + z; a chain of plain arithmetic says nothing either way."""
    hit = re.search(_CHAIN + re.escape(value), text)
    if not hit:
        return False
    lhs = hit.group(1).split("=")[0]
    lhs = re.sub(r"^.*?(?:\\\(|\\\[|\$|,|\b(?:so|then|thus|therefore|hence|that|gives|get|have)\b)\s*", "", lhs,
                 flags=re.IGNORECASE).strip()
    if not _OPERATOR.search(lhs) or not _VARIABLE.search(lhs):
        return False
    return normal_form(lhs) not in given


def _checked_result(steps: list[Step], first: int, last: int, matcher: ReferenceMatcher,
                    problem: str | None) -> int | None:
    """The first paragraph in ``steps[first:last]`` whose result equals the reference and that a check
    follows, with that result added to its answers (in place); None when there is none.

    A model that stops to check a value has taken it for its answer, even when it stated it as a bare
    equation (``\\( x = 4 \\)``, "6 times 7 is 42 inches") that ``stated_answers`` does not read as a
    conclusion. Only the reference counts: a wrong value that is checked may be one step of many.
    """
    given = normal_form(problem) if problem else ""
    for i in range(first, min(last, len(steps) - 1)):
        if not starts_unit(steps[i + 1]):
            continue
        step = steps[i]
        values = [v for v in result_values(step.text)
                  if v not in step.answers and not _copied_expression(normal_form(v), given)
                  and not _intermediate(step.text, v, given)]
        hits = matcher.matches(values) if values else []
        if any(hits):
            steps[i] = replace(step, answers=[*step.answers, values[hits.index(True)]], hits=[*step.hits, True])
            return i
    return None


def segment_rules(thought: str, *, problem: str | None, matcher: ReferenceMatcher) -> Segmentation:
    """Cut ``thought`` into restatement, understanding, approaches, verification units and conclusion.

    Approach labels and unit correctness come from ``matcher`` (the reference answer). Raises
    ``SegmentationError`` when the thought has too little structure to segment.
    """
    steps = read_steps(thought, matcher, problem)
    n = len(steps)
    if n < 3:
        raise SegmentationError(f"thought has {n} paragraph(s); at least 3 are needed to segment it")

    # restatement: the first paragraph, and the next while it keeps restating the problem
    r_end = 1
    while r_end < min(n - 2, 2) and _restates(steps[r_end].text, problem) and not COMPUTATION.search(steps[r_end].text):
        r_end += 1
    # understanding: short high-level analysis before any computation
    u_end = r_end
    while (u_end < min(n - 2, r_end + MAX_UNDERSTANDING_STEPS) and UNDERSTANDING.search(steps[u_end].text)
           and not COMPUTATION.search(steps[u_end].text) and not steps[u_end].answers):
        u_end += 1

    # the first final answer: a paragraph stating the reference, committing to an answer, or reaching the
    # reference just before a check
    first_answer = next((i for i in range(u_end, n) if _commits(steps[i])), None)
    checked = _checked_result(steps, u_end, n if first_answer is None else first_answer, matcher, problem)
    if checked is not None:
        first_answer = checked
    # conclusion: the closing paragraphs after the first answer
    c_start = n
    floor = (first_answer + 1) if first_answer is not None else u_end + 1
    if n - 1 >= floor and (first_answer is not None or CLOSING.search(steps[n - 1].text)):
        c_start = n - 1
        while (c_start - 1 >= floor and n - (c_start - 1) <= MAX_CLOSING_STEPS
               and len(steps[c_start - 1].text) <= MAX_CLOSING_CHARS and CLOSING.search(steps[c_start - 1].text)):
            c_start -= 1
    # The exploration runs on after its first answer until something opens a check: an intermediate
    # value that happens to equal the reference ("-2 < x - 1 < 4" when the answer is 4) ends nothing.
    e_end = c_start
    if first_answer is not None:
        e_end = next((j for j in range(first_answer + 1, c_start) if starts_unit(steps[j])), c_start)
    e_end = max(e_end, u_end + 1)
    if e_end > c_start:
        raise SegmentationError("no exploration paragraph before the conclusion")

    approaches = []
    bounds = [u_end] + [i for i in range(u_end + 1, e_end) if NEW_APPROACH.search(steps[i].text[:200])] + [e_end]
    for index, (a, b) in enumerate(zip(bounds, bounds[1:]), start=1):
        answer, correct = last_answer(steps[a:b])
        label = "correct" if correct else ("incorrect" if answer is not None else "incomplete")
        approaches.append(Approach(index, steps[a].start, steps[b - 1].end, answer, label,
                                   errors=_errors_in(steps, a, b - 1)))

    units = []
    current_answer, current_correct = last_answer(steps[u_end:e_end])
    if e_end < c_start:
        starts = [e_end]
        arrived = False  # the current unit has come to a result: an answer, or a fault it found
        for i in range(e_end + 1, c_start):
            # an opening paragraph that does no calculation only announces ("Let me double-check. I might have
            # made a mistake."); one that calculates may be a whole check ("... 2 + 12 = 14. Yes, that's right.")
            opening = i - 1 == starts[-1]
            arrived = arrived or _commits(steps[i - 1]) or (
                _arrives(steps[i - 1]) and (not opening or bool(CALCULATION.search(steps[i - 1].text))))
            # a check runs on until it comes to a result ("Alternatively, ..." inside it is more of the
            # same check); "Is there another way to confirm this?" belongs to the check it announces; a
            # check after a search for another method that found none starts afresh
            gave_up = opens_another_method(steps[starts[-1]]) and not opens_another_method(steps[i])
            announced = opening and _announces(steps[i - 1])
            if starts_unit(steps[i]) and (arrived or gave_up) and not announced:
                starts.append(i)
                arrived = False
        for index, (a, b) in enumerate(zip(starts, starts[1:] + [c_start]), start=1):
            fault = any(FAULT.search(s.text) for s in steps[a:b])
            answer, correct = last_answer(steps[a:b], committed=True)
            alternative = _solves_another_way(steps[a:b])
            if answer is not None:
                current_answer, current_correct = answer, correct
            elif not alternative or any(VERDICT.search(s.text) for s in steps[a:b]):
                # a check that commits to nothing checks the answer it follows; another method given up before
                # it reached an answer (no verdict on it) reaches none
                answer, correct = current_answer, (current_correct and not fault)
            units.append(VerificationUnit(index, steps[a].start, steps[b - 1].end, "fault" if fault else "confirm",
                                          answer, correct, alternative, errors=_errors_in(steps, a, b - 1)))

    return Segmentation(
        thought=thought,
        restatement=Span(steps[0].start, steps[r_end - 1].end),
        understanding=Span(steps[r_end].start, steps[u_end - 1].end) if u_end > r_end else None,
        approaches=tuple(approaches),
        units=tuple(units),
        conclusion=Span(steps[c_start].start, steps[n - 1].end) if c_start < n else None,
        segmenter="rules",
    )
