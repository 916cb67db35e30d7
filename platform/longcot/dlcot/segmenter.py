"""One interface for both segmenters, so the transform never branches on which is in use.

A ``Segmenter`` takes a batch of ``Thought``s and returns, per thought, a ``Segmentation`` or the
``SegmentationError`` that says why it could not cut it. ``rules`` works one thought at a time; ``llm``
sends the whole batch to its judge in one call (and falls back to ``rules`` per thought).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from longcot.dlcot.answers import ReferenceMatcher
from longcot.dlcot.rules import SegmentationError, segment_rules
from longcot.dlcot.structure import Segmentation


@dataclass(frozen=True)
class Thought:
    """What a segmenter needs of one trace: its thought, the problem, and a matcher for its reference."""

    text: str
    problem: str | None
    matcher: ReferenceMatcher


class Segmenter(ABC):
    name: str

    @abstractmethod
    def segment(self, thoughts: list[Thought]) -> list[Segmentation | SegmentationError]:
        """One result per thought, in order."""

    def describe(self) -> dict[str, Any]:
        """What the lineage records about this segmenter."""
        return {"segmenter": self.name}


class RulesSegmenter(Segmenter):
    """``segment_rules`` on each thought: paragraphs, discourse markers, intermediate answers, position."""

    name = "rules"

    def segment(self, thoughts: list[Thought]) -> list[Segmentation | SegmentationError]:
        out: list[Segmentation | SegmentationError] = []
        for item in thoughts:
            try:
                out.append(segment_rules(item.text, problem=item.problem, matcher=item.matcher))
            except SegmentationError as exc:
                out.append(exc)
        return out


def make_segmenter(config) -> Segmenter:
    """The segmenter ``config.segmenter`` names (a ``DlcotConfig``)."""
    if config.segmenter == "llm":
        from longcot.dlcot.llm import LLMSegmenter

        return LLMSegmenter(config.judge, check_ratio=config.check_ratio, check_jaccard=config.check_jaccard)
    return RulesSegmenter()
