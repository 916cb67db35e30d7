"""Split a model response into thought and solution, whatever marker convention it uses (or none).

Conventions:
- ``sky``: ``<|begin_of_thought|> ... <|end_of_thought|> <|begin_of_solution|> ... <|end_of_solution|>``
- ``think``: ``<think> ... </think>`` then the answer (the opening tag may be missing: chat templates add it)
- ``none``: no markers; the whole response is the thought and the solution is empty.

Every response parses into a defined state: ``truncated`` says the response stops before its closing
marker (or, without markers, visibly mid-sentence; or ``finish_reason`` is ``length``), and
``thought_closed`` whether the thought was finished. Offsets let transforms rewrite the thought and leave
every other byte alone (``replace_thought``). ``last_boxed`` reads the ``\\boxed{}`` a response answers with.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

SKY_MARKERS = ("<|begin_of_thought|>", "<|end_of_thought|>", "<|begin_of_solution|>", "<|end_of_solution|>")
THINK_MARKERS = ("<think>", "</think>")
# from a non-space, line after line until a blank line (a newline followed by one with only spaces or tabs)
_PARAGRAPH = re.compile(r"\S[^\n]*(?:\n(?![ \t]*\n)[^\n]*)*")
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*")
# a chat header some models emit instead of begin_of_solution; matches the empty string where there is none
_ROLE_HEADER = re.compile(r"(?:\s*<\|im_start\|>\w*\n?)?")


@dataclass(frozen=True)
class ParsedTrace:
    markers: str  # sky | think | none
    thought: str
    solution: str
    truncated: bool
    thought_start: int  # offsets of the thought inside the response
    thought_end: int
    solution_start: int  # offsets of the solution (start == end when there is none)
    solution_end: int
    steps: list[tuple[int, int]] = field(default_factory=list)  # step spans, relative to the thought
    thought_closed: bool = True  # the thought ended (closing marker, or a finished text without markers)

    def step_texts(self) -> list[str]:
        return [self.thought[a:b] for a, b in self.steps]


def split_steps(text: str) -> list[tuple[int, int]]:
    """Spans of the blank-line-separated paragraphs of ``text`` (leading/trailing whitespace excluded)."""
    return [(m.start(), m.start() + len(m.group().rstrip())) for m in _PARAGRAPH.finditer(text)]


def parse_trace(response: str | None, finish_reason: str | None = None) -> ParsedTrace:
    """Parse ``response``. ``finish_reason == "length"`` marks it truncated whatever its markers say."""
    text = response or ""
    hit_limit = finish_reason == "length"
    b_t, e_t, b_s, e_s = SKY_MARKERS
    if b_t in text or e_t in text or b_s in text:
        t0 = text.find(b_t)
        t0 = t0 + len(b_t) if t0 >= 0 else 0
        t1 = text.find(e_t, t0)
        if t1 < 0:
            t1 = text.find(b_s, t0)  # a solution opened without closing the thought
            if t1 < 0:  # stopped inside the thought
                return _parsed("sky", text, t0, len(text), len(text), len(text), True, closed=False)
            s0 = t1 + len(b_s)
        else:  # without begin_of_solution the solution starts right after the thought, past a chat header
            s0 = text.find(b_s, t1)
            s0 = s0 + len(b_s) if s0 >= 0 else _ROLE_HEADER.match(text, t1 + len(e_t)).end()
        s1 = text.find(e_s, s0)
        truncated = s1 < 0 or hit_limit
        return _parsed("sky", text, t0, t1, s0, s1 if s1 >= 0 else len(text), truncated)
    open_tag, close_tag = THINK_MARKERS
    if open_tag in text or close_tag in text:
        t0 = text.find(open_tag)
        t0 = t0 + len(open_tag) if t0 >= 0 else 0
        t1 = text.find(close_tag, t0)
        if t1 < 0:
            return _parsed("think", text, t0, len(text), len(text), len(text), True, closed=False)
        return _parsed("think", text, t0, t1, t1 + len(close_tag), len(text), hit_limit)
    finished = looks_finished(text) and not hit_limit
    return _parsed("none", text, 0, len(text), len(text), len(text), not finished, closed=finished)


def _parsed(markers: str, text: str, t0: int, t1: int, s0: int, s1: int, truncated: bool,
            closed: bool = True) -> ParsedTrace:
    thought = text[t0:t1]
    return ParsedTrace(markers, thought, text[s0:s1], truncated, thought_start=t0, thought_end=t1, solution_start=s0,
                       solution_end=s1, steps=split_steps(thought), thought_closed=closed)


def looks_finished(text: str) -> bool:
    """Whether ``text`` ends like a finished answer: a sentence end or closed math, its last paragraph's
    brackets balanced. For responses without markers, which say nothing else about being cut off."""
    body = text.rstrip()
    while body.endswith("*"):
        body = body[:-1].rstrip()
    if not body.endswith((".", "!", "?", "\\]", "\\)", "$", "}", ")", "```", ">", '"')):
        return False
    return _balanced(body.rsplit("\n\n", 1)[-1])  # the last paragraph


def _balanced(text: str) -> bool:
    if text.count("\\[") != text.count("\\]") or text.count("\\(") != text.count("\\)"):
        return False
    plain = re.sub(r"\\[()\[\]{}]", "", text)
    opened = plain.count("(") + plain.count("[")
    return opened <= plain.count(")") + plain.count("]") and plain.count("{") == plain.count("}")


def replace_thought(response: str, parsed: ParsedTrace, new_thought: str) -> str:
    """``response`` with its thought replaced by ``new_thought``; markers and solution stay byte-identical."""
    return response[: parsed.thought_start] + new_thought + response[parsed.thought_end :]


def parse_fields(row: dict) -> dict:
    """Row function: fill ``thought``, ``solution``, ``markers`` and ``truncated`` from ``response``."""
    parsed = parse_trace(row.get("response"), row.get("finish_reason"))
    return {**row, "thought": parsed.thought, "solution": parsed.solution, "markers": parsed.markers,
            "truncated": parsed.truncated}


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) in ``text``, braces balanced; None if absent.

    Linear in the length of ``text`` (one pass pairs every brace), so a hostile response cannot stall it.
    """
    matches = list(_BOXED.finditer(text))
    if not matches:
        return None
    closing: dict[int, int] = {}  # position of "{" -> position of its "}"
    stack: list[int] = []
    for i, ch in enumerate(text):
        if ch == "{":
            stack.append(i)
        elif ch == "}" and stack:
            closing[stack.pop()] = i
    for match in reversed(matches):
        pos = match.end()
        if text.startswith("{", pos):
            if pos in closing:
                return text[pos + 1 : closing[pos]]
        elif token := re.match(r"[^\s$]+", text[pos : pos + 200]):  # "\boxed 5"
            return token.group(0)
    return None
