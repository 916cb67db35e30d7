"""Held-out measures: how likely a model finds held-out teacher traces, and paired differences with CIs.

``heldout_nll`` is the mean negative log-likelihood per response token of teacher traces the student never
trained on, each formatted exactly as the train stage formats a training example (``train.examples``: the
student's prompt and chat template, the prompt masked, cut at ``cutoff_len``). It is summed over every
scored token of every trace and divided by their number (so a long trace weighs by its tokens).

Differences between two models are *paired*: both scored the same traces (and answered the same problems),
so the bootstrap resamples traces (problems) once and computes both models' measures on each resample.
Pure functions (no Ray); ``eval.stage`` runs ``trace_nlls`` in a Ray task per model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from longcot.errors import RejectRow


@dataclass
class TraceExample:
    id: str
    input_ids: list[int]
    labels: list[int]


def trace_examples(rows: list[dict], data, tokenizer) -> tuple[list[TraceExample], list[tuple[str, str]]]:
    """Training-formatted examples of held-out records (``data``: the student's ``train.config.DataSettings``),
    and ``(id, reason)`` of each record that cannot be one (no response, a wrong verdict, ...)."""
    from longcot.train.examples import chat_messages, encode

    examples, skipped = [], []
    for row in rows:
        try:
            ex = encode(chat_messages(row, data), tokenizer, data.cutoff_len, "truncate")
        except RejectRow as exc:
            skipped.append((row["id"], exc.reason))
            continue
        examples.append(TraceExample(row["id"], ex.input_ids, ex.labels))
    return examples, skipped


def trace_nlls(model, examples: list[TraceExample]) -> list[tuple[int, float]]:
    """``(scored tokens, summed NLL)`` of each example under ``model`` (a causal LM in eval mode)."""
    import torch

    from longcot.train.examples import IGNORE

    out = []
    with torch.inference_mode():
        for ex in examples:
            ids = torch.tensor([ex.input_ids], device=model.device)
            labels = torch.tensor([ex.labels], device=model.device)
            logits = model(input_ids=ids).logits[:, :-1].float()
            target = labels[:, 1:]
            nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                                                    ignore_index=IGNORE, reduction="sum")
            out.append((int((target != IGNORE).sum()), float(nll)))
    return out


def per_token(scores: Sequence[tuple[int, float]]) -> float | None:
    tokens = sum(t for t, _ in scores)
    return sum(n for _, n in scores) / tokens if tokens else None


def bootstrap_ci(stat, n: int, *, resamples: int = 2000, seed: int = 0, level: float = 0.95) -> list[float] | None:
    """Percentile interval of ``stat(indices)`` over ``resamples`` resamples (with replacement) of ``n`` items."""
    if n < 2:
        return None
    rng = np.random.default_rng(seed)
    values = np.array([stat(rng.integers(0, n, n)) for _ in range(resamples)], dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    tail = (1 - level) / 2
    return [float(np.quantile(values, tail)), float(np.quantile(values, 1 - tail))]


def _per_token_at(scores: Sequence[tuple[int, float]]):
    """``f(indices)``: the per-token NLL of those traces of ``scores`` (``f(slice(None))``: of all of them)."""
    tokens, nll = np.array([t for t, _ in scores], dtype=float), np.array([n for _, n in scores], dtype=float)
    return lambda i: nll[i].sum() / tokens[i].sum()


def nll_ci(scores: Sequence[tuple[int, float]], **kw) -> list[float] | None:
    return bootstrap_ci(_per_token_at(scores), len(scores), **kw)


def paired_nll_difference(model: Sequence[tuple[int, float]], baseline: Sequence[tuple[int, float]],
                          **kw) -> tuple[float, list[float] | None]:
    """``model - baseline`` per-token NLL on the same traces, and its bootstrap CI (resampling traces)."""
    if len(model) != len(baseline):
        raise ValueError(f"paired scores need the same traces: {len(model)} vs {len(baseline)}")
    mine, theirs = _per_token_at(model), _per_token_at(baseline)
    return float(mine(slice(None)) - theirs(slice(None))), bootstrap_ci(lambda i: mine(i) - theirs(i), len(model), **kw)


def rate_ci(per_problem: Sequence[float], **kw) -> list[float] | None:
    """CI of a mean over problems (e.g. each problem's share of structured answers), resampling problems."""
    values = np.asarray(per_problem, dtype=float)
    return bootstrap_ci(lambda i: values[i].mean(), len(values), **kw)


def paired_rate_difference(model: Sequence[float], baseline: Sequence[float], **kw) -> tuple[float, list[float] | None]:
    """``model - baseline`` of per-problem rates on the same problems, and its bootstrap CI."""
    a, b = np.asarray(model, dtype=float), np.asarray(baseline, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired rates need the same problems: {a.size} vs {b.size}")
    return float(a.mean() - b.mean()), bootstrap_ci(lambda i: a[i].mean() - b[i].mean(), a.size, **kw)
