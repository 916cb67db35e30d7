"""The llamacpp backend: its config, its token choice and its fail-fast check run everywhere; the engine and
the stage on the embedded model's GGUF file run where llama-cpp-python is installed (the optional extra
``longcot[llamacpp]``, which compiles llama.cpp), and are skipped with that reason elsewhere."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest

from longcot import records
from longcot.errors import ConfigError
from longcot.generate.backends import make_backend
from longcot.generate.config import GenerateConfig, GenerateLineage
from longcot.generate.llamacpp import sample_token
from longcot.generate.prompting import render_prompt
from longcot.generate.samples import fingerprint

needs_llama_cpp = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None,
    reason="llama_cpp is not importable: install the optional extra, pip install 'longcot[llamacpp]'",
)


# --- config and backend, without llama.cpp ----------------------------------------------------------


def test_llamacpp_needs_a_gguf_file_unless_the_model_ships_one():
    config = GenerateConfig(backend="llamacpp")
    assert make_backend(config).describe().gguf.endswith(".gguf")  # the embedded model's own file
    with pytest.raises(ValueError, match="llamacpp.gguf: the llamacpp backend runs a GGUF file"):
        GenerateConfig(backend="llamacpp", model="HuggingFaceTB/SmolLM2-135M-Instruct")
    assert GenerateConfig(backend="llamacpp", model="HuggingFaceTB/SmolLM2-135M-Instruct",
                          llamacpp={"gguf": "/models/smol.gguf"}).llamacpp.gguf == "/models/smol.gguf"


def test_llamacpp_applies_no_adapter():
    with pytest.raises(ValueError, match="hf.adapter applies to the hf backend only"):
        GenerateConfig(backend="llamacpp", hf={"adapter": "/some/adapter"})


def test_llamacpp_renders_as_hf_and_its_fingerprint_names_the_weights():
    hf, ll = make_backend(GenerateConfig()), make_backend(GenerateConfig(backend="llamacpp"))
    messages = [{"role": "user", "content": "What is 2 + 3?"}]
    assert ll.render(messages) == hf.render(messages)
    identity = fingerprint(GenerateConfig(backend="llamacpp"))["settings"]
    assert len(identity["gguf_sha256"]) == 64 and identity["backend"] == "llamacpp"
    assert fingerprint(GenerateConfig(backend="llamacpp"))["hash"] != fingerprint(GenerateConfig())["hash"]


def test_llamacpp_runs_bf16_weights_unless_told_and_the_run_names_them():
    default = make_backend(GenerateConfig(backend="llamacpp"))
    assert default.config.llamacpp.weights == "bf16"
    assert default.weights_dtype() == "bf16, converted from SmolLM2-135M-Instruct.Q4_1.gguf (llama.cpp)"
    assert default.describe().weights == "bf16"
    stored = GenerateConfig(backend="llamacpp", llamacpp={"weights": "as_stored"})
    assert make_backend(stored).weights_dtype() == "as stored in SmolLM2-135M-Instruct.Q4_1.gguf (llama.cpp)"
    assert fingerprint(stored)["hash"] != fingerprint(GenerateConfig(backend="llamacpp"))["hash"]
    with pytest.raises(ValueError, match="weights"):
        GenerateConfig(backend="llamacpp", llamacpp={"weights": "q3_k"})


def test_without_llama_cpp_choosing_the_backend_fails_in_one_line_that_says_how_to_install(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "llama_cpp", None)  # as if the package were not installed
    backend = make_backend(GenerateConfig(backend="llamacpp"))
    with pytest.raises(ConfigError) as caught:
        backend.check()
    message = str(caught.value)
    assert "\n" not in message and "pip install 'longcot[llamacpp]'" in message


def test_token_choice_is_the_argmax_when_greedy_and_a_seeded_draw_otherwise():
    logits = np.array([0.5, 3.0, 2.9, -1.0], dtype=np.float32)
    assert sample_token(logits, 0.0, 1.0, None) == 1
    draws = [sample_token(logits, 1.0, 1.0, np.random.default_rng(seed)) for seed in range(400)]
    again = [sample_token(logits, 1.0, 1.0, np.random.default_rng(seed)) for seed in range(400)]
    assert draws == again  # a sample depends on its seed only
    probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    share = np.bincount(draws, minlength=4) / len(draws)
    assert np.abs(share - probs).max() < 0.08  # the softmax's own proportions
    # top_p 0.45: token 1 alone holds that much of the mass (0.50), so nothing else is ever drawn
    assert {sample_token(logits, 1.0, 0.45, np.random.default_rng(s)) for s in range(50)} == {1}
    # top_p 0.9: tokens 1 and 2 are needed to reach it; 0 and 3 never come
    assert {sample_token(logits, 1.0, 0.9, np.random.default_rng(s)) for s in range(200)} == {1, 2}


# --- the engine and the stage, with llama.cpp --------------------------------------------------------


@pytest.fixture(scope="module")
def engines(embedded_model):
    from longcot.generate.hf import HFGenerator
    from longcot.generate.llamacpp import LlamaCppGenerator
    from longcot.models import DEFAULT_MODEL

    gguf = make_backend(GenerateConfig(backend="llamacpp")).gguf()
    parallel = LlamaCppGenerator(DEFAULT_MODEL, gguf=gguf, sequences=4, threads=2)
    single = LlamaCppGenerator(DEFAULT_MODEL, gguf=gguf, sequences=1, threads=2)
    hf = HFGenerator(DEFAULT_MODEL, batch_size=4, threads=2, dtype="float32")
    return parallel, single, hf


def chat(tokenizer, text):
    return render_prompt(tokenizer, [{"role": "user", "content": text}])


QUESTIONS = ("What is 2 + 2?", "Name a colour of the sky on a clear day, please.", "Say hi.",
             "What is the capital of France? Answer in one word.", "Count from one to five.")


@needs_llama_cpp
def test_parallel_sequences_write_what_one_at_a_time_writes(engines):
    parallel, single, _ = engines
    prompts = [chat(parallel.tokenizer, q) for q in QUESTIONS]  # more prompts than slots: slots are reused
    together = parallel.generate(prompts, max_tokens=12)
    alone = [single.generate([p], max_tokens=12)[0] for p in prompts]
    assert [c.text for c in together] == [c.text for c in alone]
    assert [c.prompt_tokens for c in together] == [parallel.count_tokens(p) for p in prompts]
    assert all(c.finish_reason in ("stop", "length") and c.text.strip() for c in together)
    assert any(c.finish_reason == "length" and c.output_tokens == 12 for c in together)


@needs_llama_cpp
def test_counts_and_stops_as_the_hf_engine_does(engines):
    parallel, _, hf = engines
    prompts = [chat(hf.tokenizer, q) for q in QUESTIONS]
    ours, theirs = parallel.generate(prompts, max_tokens=40), hf.generate(prompts, max_tokens=40)
    assert [c.prompt_tokens for c in ours] == [c.prompt_tokens for c in theirs]
    for c in ours:  # a stop token is counted, not shown; a length finish used every token
        assert c.output_tokens == (hf.count_tokens(c.text) + 1 if c.finish_reason == "stop" else 40)
    # the same weights (the HF model is the GGUF dequantised), computed another way: most answers start alike
    same_start = sum(a.text[:20] == b.text[:20] for a, b in zip(ours, theirs))
    assert same_start >= len(prompts) // 2, [(a.text, b.text) for a, b in zip(ours, theirs)]


@needs_llama_cpp
def test_bf16_weights_are_the_hf_backends_bf16_weights_written_once(embedded_model, tmp_path, monkeypatch):
    import torch
    from gguf import GGUFReader

    from longcot.generate.llamacpp import stored_as
    from longcot.models import DEFAULT_MODEL, load_causal_lm

    monkeypatch.setenv("LONGCOT_CACHE", str(tmp_path))
    shipped = make_backend(GenerateConfig(backend="llamacpp")).gguf()
    assert stored_as(shipped, "as_stored") == shipped
    path = Path(stored_as(shipped, "bf16"))
    assert path.parent == tmp_path / "gguf" and path.stat().st_mode & 0o044 == 0o044  # readable by others
    written = path.stat().st_mtime_ns
    assert stored_as(shipped, "bf16") == str(path) and path.stat().st_mtime_ns == written  # reused, not rewritten
    # the copy and the lock its writers share; no partial file left behind
    assert sorted(p.name for p in (tmp_path / "gguf").iterdir()) == sorted([path.name, f".{path.name}.lock"])
    tensors = {t.name: t for t in GGUFReader(path).tensors}
    hf = load_causal_lm(DEFAULT_MODEL, dtype="bfloat16").state_dict()
    for ours, theirs in (("token_embd.weight", "model.embed_tokens.weight"),
                         ("blk.0.ffn_down.weight", "model.layers.0.mlp.down_proj.weight"),
                         ("blk.7.attn_v.weight", "model.layers.7.self_attn.v_proj.weight")):
        bits = tensors[ours].data.view(np.uint16)  # bf16 as stored: the same 16 bits as torch's bf16
        assert np.array_equal(bits, hf[theirs].view(torch.int16).numpy().view(np.uint16)), ours


@needs_llama_cpp
def test_every_weight_format_generates_on_this_cpu(embedded_model, tmp_path):
    """4- and 8-bit weights took llama.cpp's AMX path on CPUs with AMX, where its matrix product segfaults
    (llama.cpp issue 20824). Run in a child process, so that a crash fails this test instead of ending the session."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from longcot.generate.backends import make_backend\n"
        "from longcot.generate.config import GenerateConfig\n"
        "from longcot.generate.llamacpp import LlamaCppGenerator\n"
        "from longcot.generate.prompting import render_prompt\n"
        "from longcot.models import DEFAULT_MODEL\n"
        "gguf = make_backend(GenerateConfig(backend='llamacpp')).gguf()\n"
        "for weights in ('as_stored', 'q4_0', 'q8_0'):\n"
        "    engine = LlamaCppGenerator(DEFAULT_MODEL, gguf=gguf, weights=weights, sequences=2, threads=2)\n"
        "    prompt = render_prompt(engine.tokenizer, [{'role': 'user', 'content': 'Say hi.'}])\n"
        "    out = engine.generate([prompt, prompt], max_tokens=6)\n"
        "    print(weights, all(c.output_tokens > 0 and c.text.strip() for c in out), flush=True)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "LONGCOT_CACHE": str(tmp_path)})
    assert done.returncode == 0, f"exit {done.returncode} after: {done.stdout!r}\n{done.stderr[-1500:]}"
    assert done.stdout.splitlines()[-3:] == ["as_stored True", "q4_0 True", "q8_0 True"], done.stdout


@needs_llama_cpp
def test_sampling_is_per_sample_seeded(engines):
    parallel, single, _ = engines
    a, b, c = (chat(parallel.tokenizer, q) for q in ("Tell me a word.", "Pick a number.", "Name an animal."))
    kw = dict(max_tokens=8, temperature=1.0, top_p=0.95)
    # one sequence at a time (the same batch shape every time), a sample depends on its prompt and seed only
    first = [single.generate([p], seed=[s], **kw)[0].text for p, s in ((a, 11), (b, 22), (c, 33))]
    assert [single.generate([p], seed=[s], **kw)[0].text for p, s in ((c, 33), (a, 11))] == [first[2], first[0]]
    # sequences sharing one KV cache and batch each draw from their own seed's generator
    assert len({o.text for o in parallel.generate([a, a, a, a], seed=[1, 2, 3, 4], **kw)}) > 1
    together = parallel.generate([a, b, c], seed=[11, 22, 33], **kw)
    assert all(o.finish_reason in ("stop", "length") and o.text.strip() for o in together)


@needs_llama_cpp
def test_a_prompt_longer_than_the_context_is_an_error_row(engines):
    parallel, _, _ = engines
    too_long = "word " * (parallel.context_length + 10)
    out = parallel.generate([too_long, chat(parallel.tokenizer, "Say hi.")], max_tokens=2)
    assert out[0].finish_reason == "error" and "context" in out[0].error
    assert out[1].finish_reason in ("stop", "length")


@needs_llama_cpp
@pytest.mark.slow
def test_llamacpp_stage_writes_the_records_the_hf_stage_writes(ray_local, tmp_path):
    from longcot.generate.stage import generate_records

    problems = [records.new_problem(q, source="t") for q in QUESTIONS[:3]]
    written = {}
    for backend in ("hf", "llamacpp"):
        config = GenerateConfig(backend=backend, batch_size=2, sampling={"n": 2, "max_tokens": 16, "temperature": 0.7},
                                resources={"num_cpus": 1})
        out = tmp_path / f"{backend}.jsonl"
        result = generate_records(problems, config, output_path=out, rejected_path=tmp_path / "rej.jsonl",
                                  progress=False, echo=False)
        assert result.summary["generated"] == 6 and result.summary["error"] == 0
        assert set(result.summary["phases"]) >= {"prepare", "actor_start", "model_load", "generating", "commit"}
        assert result.summary["phases"]["model_load"] > 0
        written[backend] = {r["id"]: r for r in map(json.loads, out.open())}
    hf, ll = written["hf"], written["llamacpp"]
    assert set(hf) == set(ll)
    for rid, row in ll.items():
        assert set(row) == set(hf[rid]) and row["prompt"] == hf[rid]["prompt"]
        assert row["prompt_tokens"] == hf[rid]["prompt_tokens"] and row["model"] == hf[rid]["model"]
        detail = records.lineage_detail(row, GenerateLineage)
        assert detail.backend == "llamacpp" and detail.sampling == records.lineage_detail(hf[rid], GenerateLineage).sampling
