"""One interface for both segmenters, so the transform never branches on which is in use.

A segmenter's ``segment`` takes a batch of ``Thought``s and returns, per thought, a ``Segmentation`` or the
``SegmentationError`` that says why it could not cut it; ``describe`` says what the lineage records of it.
``rules`` works one thought at a time; ``llm`` sends the whole batch to its judge in one call (and falls back
to ``rules`` per thought). The strategies live here; what they wrap (``rules.segment_rules``,
``llm.segment_llm``) knows nothing of this interface.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from longcot.dlcot.answers import ReferenceMatcher
from longcot.dlcot.config import JudgeConfig
from longcot.dlcot.llm import MAX_JUDGE_STEPS, JudgeOutputError, judge_generate_config, judge_messages, segment_llm
from longcot.dlcot.rules import SegmentationError, read_steps, segment_rules
from longcot.dlcot.structure import Segmentation


@dataclass(frozen=True)
class Thought:
    """What a segmenter needs of one trace: its thought, the problem, and a matcher for its reference."""

    text: str
    problem: str | None
    matcher: ReferenceMatcher


class RulesSegmenter:
    """``segment_rules`` on each thought: paragraphs, discourse markers, intermediate answers, position."""

    name = "rules"

    def segment(self, thoughts: list[Thought]) -> list[Segmentation | SegmentationError]:
        """One result per thought, in order."""
        return [self._rules(item) for item in thoughts]

    def describe(self) -> dict[str, Any]:
        return {"segmenter": self.name}

    @staticmethod
    def _rules(item: Thought) -> Segmentation | SegmentationError:
        try:
            return segment_rules(item.text, problem=item.problem, matcher=item.matcher)
        except SegmentationError as exc:
            return exc


Segmenter = RulesSegmenter  # the interface: every segmenter is one, ``llm`` overriding ``segment``


class LLMSegmenter(RulesSegmenter):
    """Labels thoughts with a judge model (any generate backend); falls back to ``rules`` per thought."""

    name = "llm"

    def __init__(self, judge: JudgeConfig, *, check_ratio: float = 0.90, check_jaccard: float = 0.95, engine=None):
        self.judge = judge
        self.check_ratio = check_ratio
        self.check_jaccard = check_jaccard
        self._engine = engine

    def describe(self) -> dict[str, Any]:
        return {"segmenter": self.name, "judge": {"backend": self.judge.backend, "model": self.judge.model}}

    def segment(self, thoughts: list[Thought]) -> list[Segmentation | SegmentationError]:
        from longcot.generate.backends import local_engine

        try:
            engine = self._engine or local_engine(judge_generate_config(self.judge))  # built once per process
        except Exception as exc:  # the judge cannot be loaded or reached: rules for every thought
            reason = f"judge unavailable: {type(exc).__name__}: {exc}"[:300]
            return [self._fallback(item, reason) for item in thoughts]
        results: dict[int, Segmentation | SegmentationError] = {}
        prompts: dict[int, Any] = {}  # the thoughts the judge is asked about, by position
        for i, item in enumerate(thoughts):
            steps = read_steps(item.text, item.matcher, item.problem)
            if len(steps) > MAX_JUDGE_STEPS:
                results[i] = self._fallback(item, f"{len(steps)} paragraphs is more than the judge is shown "
                                                  f"({MAX_JUDGE_STEPS})")
            else:
                prompts[i] = engine.render(judge_messages(item.problem, [s.text for s in steps],
                                                          self.judge.max_step_chars))
        asks = list(prompts)
        for start in range(0, len(asks), self.judge.batch_size):
            chunk = asks[start : start + self.judge.batch_size]
            try:
                replies = engine.generate([prompts[i] for i in chunk], max_tokens=self.judge.max_tokens,
                                          temperature=0.0)
            except Exception as exc:  # the judge is down or broken: every thought of the batch falls back
                replies = [None] * len(chunk)
                error = f"judge call failed: {type(exc).__name__}: {exc}"[:300]
            for i, completion in zip(chunk, replies):
                item = thoughts[i]
                if completion is None or completion.finish_reason == "error":
                    results[i] = self._fallback(item, error if completion is None
                                                else f"judge error: {completion.error}"[:300])
                    continue
                try:
                    results[i] = segment_llm(item.text, problem=item.problem, matcher=item.matcher,
                                             reply=completion.text, check_ratio=self.check_ratio,
                                             check_jaccard=self.check_jaccard)
                except JudgeOutputError as exc:
                    results[i] = self._fallback(item, str(exc))
        return [results[i] for i in range(len(thoughts))]

    def _fallback(self, item: Thought, reason: str) -> Segmentation | SegmentationError:
        seg = self._rules(item)
        if isinstance(seg, SegmentationError):
            return SegmentationError(f"{seg} (after the llm segmenter fell back to rules: {reason})")
        return replace(seg, fallback=reason)


def make_segmenter(config) -> Segmenter:
    """The segmenter ``config.segmenter`` names (a ``DlcotConfig``)."""
    if config.segmenter == "llm":
        return LLMSegmenter(config.judge, check_ratio=config.check_ratio, check_jaccard=config.check_jaccard)
    return RulesSegmenter()
