"""Decontamination: find training problems that overlap a benchmark problem by word n-grams.

Text is lower-cased and split into words (runs of letters and digits: LaTeX commands become words
too, the same way on both sides). A problem is contaminated when at least ``min_overlap`` of its n-grams
occur in one single benchmark problem; a problem shorter than n words must equal a benchmark problem.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

_WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def ngrams(tokens: list[str], n: int) -> set[int]:
    return {hash(tuple(tokens[i : i + n])) for i in range(len(tokens) - n + 1)}


@dataclass(frozen=True)
class Contamination:
    """Why a problem counts as contaminated: the benchmark problem it overlaps and by how much."""

    benchmark: str
    benchmark_index: int  # 0-based position of the problem in the benchmark
    benchmark_problem: str
    shared: int  # n-grams in common
    overlap: float  # shared / n-grams of the training problem

    def reason(self, n: int) -> str:
        return (
            f"contaminated: {self.overlap:.0%} of its {n}-grams ({self.shared}) occur in "
            f"{self.benchmark} problem #{self.benchmark_index}"
        )


class BenchmarkIndex:
    """The n-grams of every problem of the chosen registry benchmarks, for overlap lookups."""

    def __init__(self, names: Sequence[str] | None = None, n: int = 8, *, exclude: Sequence[str] = (),
                 extra_dirs: Sequence[str] = ()):
        from longcot.problems.benchmarks import iter_problems, load_registry

        registry = load_registry(extra_dirs)
        unknown = sorted(set(names or []) - set(registry))
        if unknown:
            from longcot.errors import ConfigError

            raise ConfigError(
                f"verify.curate.decontaminate.benchmarks: unknown {unknown}; allowed: {', '.join(sorted(registry))}"
            )
        self.n = n
        self.names = [name for name in (names or sorted(registry)) if name not in exclude]
        self.problems: list[tuple[str, int, str]] = []  # (benchmark, index, text)
        self._grams: defaultdict[int, list[int]] = defaultdict(list)  # n-gram -> the problems that have it (by number)
        self._short: dict[tuple[str, ...], int] = {}  # problems shorter than n words, whole
        for name in self.names:
            for index, row in enumerate(iter_problems(registry[name])):
                self._add(name, index, row["problem"])

    def _add(self, name: str, index: int, text: str) -> None:
        number = len(self.problems)
        self.problems.append((name, index, text))
        tokens = words(text)
        if len(tokens) < self.n:
            self._short.setdefault(tuple(tokens), number)
            return
        for gram in ngrams(tokens, self.n):
            self._grams[gram].append(number)

    def __len__(self) -> int:
        return len(self.problems)

    def match(self, text: str, min_overlap: float) -> Contamination | None:
        """The benchmark problem ``text`` overlaps most, if by at least ``min_overlap``; else None."""
        tokens = words(text)
        if len(tokens) < self.n:
            number = self._short.get(tuple(tokens))
            return self._found(number, 1, 1.0) if number is not None and tokens else None
        grams = ngrams(tokens, self.n)
        counts = Counter(number for gram in grams for number in self._grams.get(gram, ()))
        if not counts:
            return None
        number, shared = counts.most_common(1)[0]
        overlap = shared / len(grams)
        return self._found(number, shared, overlap) if overlap >= min_overlap else None

    def _found(self, number: int, shared: int, overlap: float) -> Contamination:
        name, index, text = self.problems[number]
        return Contamination(name, index, text, shared, round(overlap, 4))


# a cached BenchmarkIndex, called with tuples (building one over every shipped benchmark takes about a second)
benchmark_index = lru_cache(maxsize=4)(BenchmarkIndex)
