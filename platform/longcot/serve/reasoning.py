"""Reasoning-aware answers: the thought goes to ``reasoning_content``, the rest to ``content``.

Whole texts are split with the verify stage's ``parse_trace`` (``<think>``/``</think>`` or Sky-T1's
``<|begin_of_thought|>`` ... ``<|end_of_solution|>``); ``ReasoningStream`` makes the same split
incrementally for streamed deltas, holding back any tail that may be the start of a marker. Both strip
the whitespace around each part, so joining a stream's deltas gives the non-streamed answer.

A chat template may open the thought itself (the prompt ends with ``<think>``): pass that marker as
``opened``. A stream decides from its first non-blank characters whether it opens a thought; markers
that turn up later in text that did not open with one stream as content (the whole-text split would
treat them as markers).
"""

from __future__ import annotations

from dataclasses import dataclass

from longcot.serve.stops import partial_suffix
from longcot.traces import SKY_MARKERS, THINK_MARKERS, parse_trace

BEGIN_THOUGHT, END_THOUGHT, BEGIN_SOLUTION, END_SOLUTION = SKY_MARKERS
OPEN_THINK, CLOSE_THINK = THINK_MARKERS
# opening marker -> the marker that closes the thought
CLOSERS = {BEGIN_THOUGHT: END_THOUGHT, OPEN_THINK: CLOSE_THINK}


@dataclass(frozen=True)
class ReasoningSplit:
    reasoning: str | None  # None: the text has no thought markers
    content: str


def opened_marker(prompt: str) -> str | None:
    """The thought-opening marker a rendered prompt ends with, if any."""
    tail = prompt.rstrip()
    return next((m for m in CLOSERS if tail.endswith(m)), None)


def split_reasoning(text: str, *, opened: str | None = None, finish_reason: str | None = None) -> ReasoningSplit:
    """Thought and answer of a whole generated ``text`` (``opened``: the prompt already opened the thought)."""
    parsed = parse_trace((opened or "") + text, finish_reason)
    if parsed.markers == "none":
        return ReasoningSplit(None, text.strip())
    return ReasoningSplit(parsed.thought.strip(), parsed.solution.strip())


@dataclass
class _Part:
    """One output part (reasoning or content): strips leading whitespace and holds trailing whitespace."""

    kind: str
    started: bool = False  # something was emitted: leading whitespace is text from here on
    pending: str = ""

    def emit(self, text: str, out: list[tuple[str, str]]) -> None:
        text = self.pending + (text if self.started else text.lstrip())
        body = text.rstrip()
        self.pending = text[len(body) :]
        if body:
            out.append((self.kind, body))
            self.started = True


class ReasoningStream:
    """Streamed deltas in, ``(kind, text)`` pieces out, ``kind`` being ``reasoning`` or ``content``.

    The stream is in one part at a time: ``start`` and ``between`` wait for a marker that may open the next
    part, ``reasoning`` and ``content`` run until their closing marker (if any), ``done`` drops the rest."""

    def __init__(self, opened: str | None = None):
        self._buf = ""
        self._parts = {"reasoning": _Part("reasoning"), "content": _Part("content")}
        self._state, self._closer = ("reasoning", CLOSERS[opened]) if opened else ("start", None)

    def feed(self, delta: str) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        self._buf += delta
        while self._step(out):
            pass
        return out

    def close(self) -> list[tuple[str, str]]:
        """Flush what was held back: with no more text, a partial marker is just text."""
        out: list[tuple[str, str]] = []
        if self._state != "done":
            self._parts["reasoning" if self._state == "reasoning" else "content"].emit(self._buf, out)
        self._buf, self._state = "", "done"
        return out

    def _step(self, out: list[tuple[str, str]]) -> bool:
        """Consume what can be decided from the buffer; True when the state changed and more may follow."""
        buf = self._buf
        if self._state in OPENINGS:
            openings, otherwise = OPENINGS[self._state]
            head = buf.lstrip()
            marker = next((m for m in openings if head.startswith(m)), None)
            if marker is None and any(m.startswith(head) for m in openings):
                return False  # still may become a marker
            if marker is not None:
                self._buf = head[len(marker) :]
            self._state, self._closer = openings.get(marker, otherwise)
            return True
        if self._state == "done":
            self._buf = ""
            return False
        part = self._parts[self._state]
        if self._closer and self._closer in buf:
            at = buf.index(self._closer)
            part.emit(buf[:at], out)
            self._buf = buf[at + len(self._closer) :]
            self._state, self._closer = AFTER[self._closer]
            return True
        keep = partial_suffix(buf, [self._closer]) if self._closer else 0
        part.emit(buf[: len(buf) - keep], out)
        self._buf = buf[len(buf) - keep :]
        return False


# state -> (the markers that may open the next part: the part and its closer, the part when none does)
OPENINGS = {
    "start": ({m: ("reasoning", closer) for m, closer in CLOSERS.items()}, ("content", None)),
    "between": ({BEGIN_SOLUTION: ("content", END_SOLUTION)}, ("content", END_SOLUTION)),  # Sky-T1: after the thought
}
# closing marker -> the next state and its closer
AFTER = {CLOSE_THINK: ("content", None), END_THOUGHT: ("between", None), END_SOLUTION: ("done", None)}
