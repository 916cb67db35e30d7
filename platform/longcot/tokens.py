"""Token counts of the thought and the solution, with the tokenizer of the model that will train on them."""

from __future__ import annotations

from functools import cached_property


class TokenCounter:
    """Counts tokens with ``ref``'s tokenizer (``embedded:NAME``, a hub id or a local path).

    Counting reads the model's ``tokenizer.json`` with the ``tokenizers`` library when the model is a local
    directory (the same Rust tokenizer transformers would wrap, without importing transformers: seconds
    saved in every worker). ``tokenizer`` is the transformers tokenizer, loaded on first use.
    """

    def __init__(self, ref: str):
        from longcot.models import tokenizer_json

        self.ref = ref
        self._fast = None
        path = tokenizer_json(ref)
        if path is not None:
            from tokenizers import Tokenizer

            self._fast = Tokenizer.from_file(str(path))
        else:
            self.tokenizer  # loaded now: a missing tokenizer fails here, not at the first count

    @cached_property
    def tokenizer(self):
        """The transformers tokenizer of ``ref`` (for text: ``models.text_tokenizer``)."""
        from longcot.models import text_tokenizer

        return text_tokenizer(self.ref)

    def count(self, texts: list[str]) -> list[int]:
        if not texts:
            return []
        if self._fast is not None:
            # the ids alone (no character offsets): a third faster, the same tokens
            return [len(e.ids) for e in self._fast.encode_batch_fast(list(texts), add_special_tokens=False)]
        encoded = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        return [len(ids) for ids in encoded]


def count_tokens(rows: list[dict], counter: TokenCounter) -> list[dict]:
    """Rows with ``thought_tokens`` and ``solution_tokens`` filled (0 for an empty section)."""
    thoughts = counter.count([r.get("thought") or "" for r in rows])
    solutions = counter.count([r.get("solution") or "" for r in rows])
    return [{**r, "thought_tokens": t, "solution_tokens": s} for r, t, s in zip(rows, thoughts, solutions)]
