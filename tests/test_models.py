"""The embedded default model: SmolLM2-135M-Instruct from its GGUF, loaded offline, generating."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from longcot import models
from longcot.errors import ConfigError


def test_embedded_model_resolves_to_a_plain_hf_directory(embedded_model):
    path = Path(embedded_model)
    assert (path / "config.json").exists() and (path / "tokenizer.json").exists()
    assert models.resolve(models.DEFAULT_MODEL) == embedded_model  # cached, not re-materialised


def test_hub_ids_and_paths_pass_through_unchanged():
    assert models.resolve("Qwen/QwQ-32B") == "Qwen/QwQ-32B"
    assert models.resolve("/models/student") == "/models/student"


def test_unknown_embedded_name_lists_the_allowed_ones():
    with pytest.raises(ConfigError, match="allowed: smollm2-135m-instruct"):
        models.resolve("embedded:gpt-5")


def test_embedded_model_generates_a_real_answer(embedded_model):
    tokenizer = models.load_tokenizer(models.DEFAULT_MODEL)
    model = models.load_causal_lm(models.DEFAULT_MODEL)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(134.5e6, rel=0.01)
    messages = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    text = tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in text
