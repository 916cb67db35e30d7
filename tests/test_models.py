"""The embedded default model: SmolLM2-135M-Instruct from its GGUF, loaded offline, generating."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from longcot import models
from longcot.errors import ConfigError
from conftest import MATH_TRACES


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


def test_prompts_render_and_count_as_with_the_models_own_tokenizer_without_importing_torch(embedded_model):
    """The driver renders every prompt, and a recorded teacher's actors count them, with the model's chat template:
    neither needs torch, which AutoTokenizer imports with the model's config (2.3 s of every such process here)."""
    import json
    import subprocess
    import sys

    messages = [{"role": "system", "content": "Think step by step."}, {"role": "user", "content": "What is 6 x 7?"}]
    script = f"""
import json, sys
from longcot.generate.backends import HFBackend
from longcot.generate.config import GenerateConfig, RecordedSettings
from longcot.generate.recorded import RecordedTeacher
messages = {messages!r}
prompt = HFBackend(GenerateConfig(model="embedded:smollm2-135m-instruct")).render(messages)
(completion, _), = RecordedTeacher(RecordedSettings(path={str(MATH_TRACES)!r})).answer(
    [{{"problem": "unknown", "sample_index": 0, "prompt": json.dumps(messages)}}])
print(json.dumps({{"prompt": prompt, "tokens": completion.prompt_tokens, "torch": "torch" in sys.modules}}))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    got = json.loads(done.stdout.strip().splitlines()[-1])
    tokenizer = models.load_tokenizer(models.DEFAULT_MODEL)
    expected = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert got["prompt"] == expected
    assert got["tokens"] == len(tokenizer(expected, add_special_tokens=False)["input_ids"])
    assert got["torch"] is False


def test_no_model_is_loaded_with_hub_kernels(embedded_model):
    """transformers turns Hub kernels on by default when ``kernels`` is installed (it is, with transformers 5.25),
    and then fetches kernel code from the Hub once the model is on a GPU: an offline GPU node failed its first
    training step. Every load (generate, eval and serve's, training's) must leave them off."""
    from types import SimpleNamespace

    from longcot.train.config import TrainConfig
    from longcot.train.worker import build_model

    assert models.load_causal_lm(models.DEFAULT_MODEL).use_kernels is False
    config = TrainConfig.model_validate({"model": embedded_model, "mode": "full"})
    assert build_model(config, SimpleNamespace(bf16=False)).use_kernels is False


def test_auto_dtype_is_bf16_where_the_cpu_computes_it_and_fp32_elsewhere():
    flags = Path("/proc/cpuinfo").read_text().split() if Path("/proc/cpuinfo").exists() else []
    if "avx512_bf16" in flags or "amx_bf16" in flags:
        assert models.cpu_has_bf16()
    assert models.weights_dtype("auto", "cpu") == ("bfloat16" if models.cpu_has_bf16() else "float32")
    assert models.weights_dtype("auto", "cuda:0") == "bfloat16"
    assert models.weights_dtype("float32", "cpu") == "float32"  # asked for: whatever the CPU
    model = models.load_causal_lm(models.DEFAULT_MODEL)
    assert next(model.parameters()).dtype == getattr(torch, models.weights_dtype("auto", "cpu"))
    assert next(models.load_causal_lm(models.DEFAULT_MODEL, dtype="float32").parameters()).dtype == torch.float32


def random_adapter(path: Path):
    """A LoRA of the embedded model with random (not zero) weights, saved to ``path``; the PEFT model."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    lora = get_peft_model(models.load_causal_lm(models.DEFAULT_MODEL, dtype="float32"),
                          LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    lora.save_pretrained(path)
    return lora


def test_an_adapter_is_merged_into_the_weights_at_load(tmp_path):
    lora = random_adapter(tmp_path / "adapter")
    ids = torch.tensor([[1, 504, 3458, 314, 260, 3575, 30]])
    with torch.no_grad():
        unmerged = lora(input_ids=ids).logits
        merged_model = models.load_causal_lm(models.DEFAULT_MODEL, adapter=str(tmp_path / "adapter"), dtype="float32")
        merged = merged_model(input_ids=ids).logits
    assert not any("lora" in name for name, _ in merged_model.named_parameters())  # a plain model
    assert torch.allclose(merged, unmerged, atol=1e-3)


def test_a_merged_adapter_in_bf16_rounds_the_weights_but_not_ropes_float32_buffers(tmp_path):
    """Cast as a whole (``model.to(bf16)``), the merged student also rounded RoPE's inverse frequencies, which a
    model loaded in bf16 keeps in float32: its held-out NLL moved by 0.01 against the same student loaded plain."""
    random_adapter(tmp_path / "adapter")
    plain = models.load_causal_lm(models.DEFAULT_MODEL, dtype="bfloat16")
    merged = models.load_causal_lm(models.DEFAULT_MODEL, adapter=str(tmp_path / "adapter"), dtype="bfloat16")
    assert {p.dtype for p in merged.parameters()} == {torch.bfloat16}
    buffers, theirs = dict(merged.named_buffers()), dict(plain.named_buffers())
    assert buffers.keys() == theirs.keys() and any(b.dtype == torch.float32 for b in theirs.values())
    for name, buffer in theirs.items():
        assert buffers[name].dtype == buffer.dtype and torch.equal(buffers[name], buffer), name


def test_a_merged_models_head_scores_a_batch_in_one_product(tmp_path):
    """``generate``'s first step gives the LM head each row's last position, a strided view. When the weights need
    no gradient (a merged adapter freezes them), torch multiplies such a view by a copy of the whole head for
    each row: batch x hidden x vocabulary values, 1.3 s per batch of 16 on the quickstart's eval. The loaded
    model hands the head a contiguous input, which torch multiplies in one product."""
    random_adapter(tmp_path / "adapter")
    model = models.load_causal_lm(models.DEFAULT_MODEL, adapter=str(tmp_path / "adapter"), dtype="float32")
    assert not any(p.requires_grad for p in model.parameters())  # what sends torch down the copying path
    ids = torch.randint(0, 1000, (4, 8))
    with torch.inference_mode(), torch.profiler.profile(record_shapes=True) as prof:
        logits = model(input_ids=ids, logits_to_keep=1).logits
    per_row_head = [4, model.config.hidden_size, model.config.vocab_size]
    assert logits.shape == (4, 1, model.config.vocab_size)
    assert not [e.name for e in prof.events() if per_row_head in e.input_shapes]


@pytest.mark.skipif(not models.cpu_has_bf16(), reason="packing applies to bf16 on a CPU that computes it natively")
def test_a_packed_model_gives_the_same_tokens_and_nll_with_every_linear_layer_laid_out_for_onednn(tmp_path):
    """``packed=True`` replaces every linear layer of a bf16 model by a ``PackedLinear`` (its weight reordered once
    for oneDNN, the original freed), the tied head included, and changes nothing in what the model computes:
    the same greedy tokens, and logits within bf16's rounding. A model that cannot be packed (fp32) is left as
    it is."""
    from longcot.eval.heldout import TraceExample, trace_nlls
    from longcot.onednn import PackedLinear

    random_adapter(tmp_path / "adapter")
    for adapter in (None, str(tmp_path / "adapter")):
        plain = models.load_causal_lm(models.DEFAULT_MODEL, adapter=adapter, dtype="bfloat16")
        packed = models.load_causal_lm(models.DEFAULT_MODEL, adapter=adapter, dtype="bfloat16", packed=True)
        layers = [m for m in packed.modules() if isinstance(m, (torch.nn.Linear, PackedLinear))]
        assert layers and all(type(m) is PackedLinear for m in layers)
        assert type(packed.get_output_embeddings()) is PackedLinear
        assert packed.get_input_embeddings().weight.dtype == torch.bfloat16  # the tied weight stays for the input
        ids = torch.tensor([[1, 504, 3458, 314, 260, 3575, 30], [2, 2, 1, 504, 3458, 314, 30]])
        mask = torch.tensor([[1] * 7, [0, 0, 1, 1, 1, 1, 1]])
        with torch.inference_mode():
            a = plain.generate(input_ids=ids, attention_mask=mask, max_new_tokens=24, do_sample=False, pad_token_id=2)
            b = packed.generate(input_ids=ids, attention_mask=mask, max_new_tokens=24, do_sample=False, pad_token_id=2)
            assert torch.equal(a, b)
            logits_a, logits_b = plain(input_ids=ids).logits.float(), packed(input_ids=ids).logits.float()
        assert (logits_a - logits_b).abs().max() < 0.1 * logits_a.abs().max()
        example = TraceExample("t", ids[0].tolist(), [-100, -100] + ids[0, 2:].tolist())
        (n_a, nll_a), (n_b, nll_b) = trace_nlls(plain, [example])[0], trace_nlls(packed, [example])[0]
        assert n_a == n_b and abs(nll_a - nll_b) < 0.02 * nll_a
    fp32 = models.load_causal_lm(models.DEFAULT_MODEL, dtype="float32", packed=True)
    assert not any(type(m) is PackedLinear for m in fp32.modules())


def test_hf_fingerprint_holds_the_dtype_as_resolved():
    from longcot.generate.config import GenerateConfig
    from longcot.generate.samples import fingerprint

    auto = fingerprint(GenerateConfig())
    resolved = fingerprint(GenerateConfig(hf={"dtype": models.weights_dtype("auto", "cpu")}))
    other = fingerprint(GenerateConfig(hf={"dtype": "float16"}))
    assert auto["settings"]["dtype"] == models.weights_dtype("auto", "cpu") and auto["hash"] == resolved["hash"]
    assert other["hash"] != auto["hash"]
