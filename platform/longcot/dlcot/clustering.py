"""Redundancy clustering: approaches and verification units that follow the same method, to the same end.

In ``rules`` mode two members share a cluster when they land on the same answer (both on the reference,
or the same normal form of a wrong one) and the later one says little new: at least ``threshold`` of its
content words and numbers are already in the cluster's first member. A verification unit that re-checks
the work (it confirms, and opens with no other method) follows the method of the work that produced the
answer it confirms, so it joins that cluster whatever its wording: re-doing a computation is not a new
method; "Alternatively, ..." is compared by its words. The first member of a cluster is its representative
and the one a simplification keeps.

In ``llm`` mode the judge's cluster ids are used as they are (``cluster`` already set on every member).
"""

from __future__ import annotations

import re
from dataclasses import replace

from longcot.dlcot.answers import normal_form
from longcot.dlcot.structure import Approach, Segmentation, VerificationUnit

_TOKEN = re.compile(r"[a-z]{3,}|\d+(?:\.\d+)?|\\[a-z]+")
STOPWORDS = frozenset(
    """the and that this with from then than have has had was were are for not but can could would should
    will let's let me now just also which what when where there here its it's into onto over under about
    again first second next last same some any all each one two both such very really maybe perhaps so
    wait okay alright hmm think know see need get got make sure check verify double yes right correct
    seems seem looks like way another alternatively because since thus therefore hence""".split()
)


def method_tokens(text: str) -> frozenset[str]:
    """Content words, numbers and LaTeX commands of ``text``: what two texts of one method share."""
    return frozenset(t for t in _TOKEN.findall(text.lower()) if t not in STOPWORDS)


def containment(new: frozenset[str], earlier: frozenset[str]) -> float:
    """The share of ``new``'s tokens that ``earlier`` already has: 1.0 when ``new`` says nothing new."""
    return len(new & earlier) / len(new) if new else 1.0


def _answer_key(member: Approach | VerificationUnit) -> str | None:
    if member.correct:
        return "=reference"
    return normal_form(member.answer) if member.answer else None


def _rechecks(member: Approach | VerificationUnit) -> bool:
    return isinstance(member, VerificationUnit) and member.label == "confirm" and not member.alternative


def cluster_approaches(segmentation: Segmentation, *, threshold: float) -> Segmentation:
    """``segmentation`` with a ``cluster`` id (1-based, in order of first appearance) on every approach
    and verification unit. Members that already carry a cluster id (from the judge) keep it."""
    members = segmentation.members()
    if members and all(m.cluster is not None for m in members):
        return segmentation
    thought = segmentation.thought
    reps: list[tuple[int, str | None, frozenset[str]]] = []  # (cluster, answer key, tokens of its first member)
    out = []
    for member in members:
        key = _answer_key(member)
        tokens = method_tokens(thought[member.start : member.end])
        same_end = [(cluster, rep_tokens) for cluster, rep_key, rep_tokens in reps if rep_key == key]
        if _rechecks(member) and key is not None and same_end:
            best = same_end[0][0]  # a re-check follows the method of the work that produced the answer it confirms
        else:  # the most similar earlier method, at the threshold or over (on a tie the later one)
            sim, closest = max(((containment(tokens, t), cluster) for cluster, t in same_end), default=(0.0, None))
            best = closest if sim >= threshold else None
        if best is None:
            best = len(reps) + 1
            reps.append((best, key, tokens))
        out.append(replace(member, cluster=best))
    return segmentation.with_members(out)
