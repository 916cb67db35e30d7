"""Stop sequences: cut generated text at the first one, for whole texts and for streamed deltas."""

from __future__ import annotations


def partial_suffix(text: str, markers: list[str] | tuple[str, ...]) -> int:
    """Length of the longest tail of ``text`` that is a proper prefix of one of ``markers``.

    A stream must hold such a tail back: the next delta may complete the marker.
    """
    return max((size for marker in markers for size in range(1, min(len(marker), len(text) + 1))
                if text.endswith(marker[:size])), default=0)


def cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """``(text before the earliest stop sequence, whether one was found)``."""
    at = min((i for i in map(text.find, stops) if i >= 0), default=None)
    return (text, False) if at is None else (text[:at], True)


class StopScanner:
    """Feeds streamed deltas through ``cut_at_stop``: what is safe to send now, and whether a stop was hit."""

    def __init__(self, stops: list[str]):
        self.stops = stops
        self.stopped = False
        self._held = ""

    def feed(self, delta: str) -> str:
        if self.stopped:
            return ""
        text, self.stopped = cut_at_stop(self._held + delta, self.stops)
        keep = 0 if self.stopped else partial_suffix(text, self.stops)  # nothing is held once a stop is hit
        self._held = text[len(text) - keep :]
        return text[: len(text) - keep]

    def close(self) -> str:
        """What was held back, now that no more text comes."""
        text, self._held = self._held, ""
        return text
