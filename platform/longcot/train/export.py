"""Turning a finished run's final checkpoint into the stage's outputs."""

from __future__ import annotations

from pathlib import Path


def base_dtype(model_ref: str) -> str:
    """The dtype the base model is stored in (``float32`` when its config does not say)."""
    from transformers import AutoConfig

    from longcot.models import resolve

    dtype = getattr(AutoConfig.from_pretrained(resolve(model_ref)), "dtype", None)
    return str(dtype or "float32").removeprefix("torch.")


def merge_adapter(model_ref: str, adapter_dir: str | Path, out_dir: str | Path) -> Path:
    """Base + LoRA adapter merged into a standard Hugging Face model directory (weights, config, tokenizer).

    Loads the base on CPU in its stored dtype, so the machine running this needs that much memory.
    """
    from transformers import AutoTokenizer

    from longcot.models import load_causal_lm

    out = Path(out_dir)
    merged = load_causal_lm(model_ref, adapter=str(adapter_dir), dtype=base_dtype(model_ref), device="cpu")
    merged.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(str(adapter_dir)).save_pretrained(out)
    return out
