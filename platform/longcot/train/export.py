"""Turning a finished run's final checkpoint into the stage's outputs."""

from __future__ import annotations

from pathlib import Path


def merge_adapter(model_ref: str, adapter_dir: str | Path, out_dir: str | Path) -> Path:
    """Base + LoRA adapter merged into a standard Hugging Face model directory (weights, config, tokenizer).

    Loads the base on CPU in its stored dtype (``float32`` when its config does not say), so the machine running
    this needs that much memory.
    """
    from transformers import AutoConfig, AutoTokenizer

    from longcot.models import load_causal_lm, resolve

    out = Path(out_dir)
    stored = str(getattr(AutoConfig.from_pretrained(resolve(model_ref)), "dtype", None) or "float32")
    merged = load_causal_lm(model_ref, adapter=str(adapter_dir), dtype=stored.removeprefix("torch."), device="cpu")
    merged.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(str(adapter_dir)).save_pretrained(out)
    return out
