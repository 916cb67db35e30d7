"""Token counts for token efficiency: fill the counts a record lacks with one named tokenizer.

Generated samples carry ``output_tokens`` from the backend; saved responses usually carry none, and no
record carries thought/solution counts before it is parsed. Counting is done with one tokenizer
(recorded in the manifest) so that variants compared side by side are counted alike; thought and
solution are counted by the verify stage's ``count_tokens``.
"""

from __future__ import annotations

from longcot.tokens import TokenCounter, count_tokens

__all__ = ["TokenCounter", "fill_token_counts"]


def fill_token_counts(rows: list[dict], counter: TokenCounter) -> list[dict]:
    """Rows with ``output_tokens`` (the response), ``thought_tokens`` and ``solution_tokens`` set where they
    were null; a missing text counts as zero. A count a backend reported (stop token included) is kept."""
    out = [dict(r) for r in rows]
    no_output = [r for r in out if r.get("output_tokens") is None]
    for row, n in zip(no_output, counter.count([r.get("response") or "" for r in no_output])):
        row["output_tokens"] = n
    unsplit = [i for i, r in enumerate(out) if r.get("thought_tokens") is None or r.get("solution_tokens") is None]
    for i, counted in zip(unsplit, count_tokens([out[i] for i in unsplit], counter)):
        out[i] = counted
    return out
