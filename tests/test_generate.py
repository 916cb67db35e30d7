"""Unit tests of the generate stage's pure parts, and HFGenerator on the embedded model (no Ray)."""

from __future__ import annotations

import json
import threading

import pytest

from longcot import records
from longcot.errors import ConfigError, RejectRow
from longcot.generate.backend import Completion
from longcot.generate.config import GenerateConfig, GenerateLineage, HFLineage
from longcot.generate.prompting import (
    DOMAIN_INSTRUCTIONS,
    build_messages,
    instruction_for,
    render_prompt,
    system_prompt,
)
from longcot.generate.samples import (
    as_problem,
    claim_output,
    complete_rows,
    expand_samples,
    fill_completion,
    fingerprint,
    fingerprint_path,
    output_stats,
    sample_seed,
)
from longcot.recordfiles import existing_ids, write_records
from longcot.traces import SKY_MARKERS, THINK_MARKERS

HF = HFLineage(backend="hf", model="m", batch_size=2)  # a backend's description, as Backend.describe gives it


def problem(text="What is 2 + 3?", **kw):
    kw.setdefault("source", "file:t.jsonl")
    return records.new_problem(text, **kw)


# --- prompting -------------------------------------------------------------------------------------


def test_system_prompt_names_the_markers_of_each_convention():
    sky, think = system_prompt("sky"), system_prompt("think")
    assert all(m in sky for m in SKY_MARKERS) and THINK_MARKERS[0] not in sky
    assert all(m in think for m in THINK_MARKERS) and SKY_MARKERS[0] not in think
    with pytest.raises(ValueError, match="allowed: sky, think"):
        system_prompt("xml")


def test_instruction_order_argument_then_row_then_domain():
    gsm = problem("Q", source="benchmark:gsm8k")
    assert "a number, in \\boxed{}" in instruction_for(gsm)  # the registry entry's own instruction
    assert instruction_for(problem("Q", domain="code")) == DOMAIN_INSTRUCTIONS["code"]
    assert "letter" in instruction_for(problem("Q", domain="mcq"))
    assert "\\boxed{}" in instruction_for(problem("Q"))
    own = problem("Q", metadata={"instruction": "Answer in French."})
    assert instruction_for(own) == "Answer in French."
    assert instruction_for(own, "Be brief.") == "Be brief."
    by_meta = problem("Q", source="file:x.jsonl", metadata={"benchmark": "gpqa"})
    assert "letter of the correct option" in instruction_for(by_meta)


def test_build_messages_system_then_problem_and_instruction():
    msgs = build_messages(problem("What is 2 + 3?"), markers="sky")
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert msgs[0]["content"] == system_prompt("sky")
    assert msgs[1]["content"].startswith("What is 2 + 3?\n\n") and "\\boxed{}" in msgs[1]["content"]
    assert [m["role"] for m in build_messages(problem(), system="")] == ["user"]
    with pytest.raises(ValueError, match="no problem text"):
        build_messages({"problem": "  "})


@pytest.fixture(scope="module")
def tokenizer(embedded_model):
    from longcot.models import load_tokenizer

    return load_tokenizer(embedded_model)


def test_render_prompt_uses_the_chat_template(tokenizer):
    text = render_prompt(tokenizer, build_messages(problem(), markers="think"))
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
    assert "What is 2 + 3?" in text


def test_render_prompt_folds_system_into_user_when_the_template_refuses_it(tokenizer):
    import copy

    tok = copy.deepcopy(tokenizer)
    tok.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}"
        "<{{ m['role'] }}>{{ m['content'] }}</{{ m['role'] }}>{% endfor %}<assistant>"
    )
    text = render_prompt(tok, build_messages(problem(), markers="sky"))
    assert text.startswith("<user>" + system_prompt("sky")) and "What is 2 + 3?" in text
    tok.chat_template = None
    assert render_prompt(tok, [{"role": "user", "content": "hi"}]) == "User: hi\n\nAssistant:"


# --- samples and records ---------------------------------------------------------------------------


def test_sample_ids_are_stable_hashes_of_problem_and_index():
    p = problem()
    a, b = expand_samples(p, 3), expand_samples(dict(p), 3)
    assert [r["id"] for r in a] == [r["id"] for r in b]
    assert len({r["id"] for r in a}) == 3 and [r["sample_index"] for r in a] == [0, 1, 2]
    assert all(r["problem_id"] == p["problem_id"] for r in a)
    assert sample_seed(0, a[0]["id"]) == sample_seed(0, a[0]["id"]) != sample_seed(1, a[0]["id"])


def test_as_problem_keeps_problem_fields_and_rejects_rows_without_text():
    done = {**problem(), "response": "old", "verdict": "correct", "sample_index": 4}
    p = as_problem(done)
    assert p["response"] is None and p["verdict"] is None and p["sample_index"] is None
    assert p["id"] == p["problem_id"] == done["problem_id"]
    bare = as_problem(records.conform({"problem": "Add 1 and 1."}))
    assert bare["problem_id"] == records.problem_id("Add 1 and 1.", None) and bare["domain"] == "math"
    with pytest.raises(RejectRow, match="row 3: no problem text"):
        as_problem(records.conform({"problem": ""}), "row 3: ")


def test_fill_completion_sets_fields_parse_and_lineage():
    row = {**expand_samples(problem(), 1)[0], "prompt": "p"}
    text = "<think>\n2 plus 3 is 5\n</think>\n\nThe answer is \\boxed{5}."
    out = fill_completion(row, Completion(text, 12, 20, "stop", seconds=0.5), model="m", detail=HF)
    assert out["response"] == text and out["finish_reason"] == "stop" and out["truncated"] is False
    assert out["markers"] == "think" and "\\boxed{5}" in out["solution"] and out["output_tokens"] == 20
    assert json.loads(out["lineage"][-1]["detail"]) == {**HF.model_dump(exclude_unset=True), "seconds": 0.5}  # the keys written, no others
    assert records.lineage_detail(out, GenerateLineage).attempts == 1
    cut = fill_completion(row, Completion("<think> still going", 12, 8, "length"), model="m", detail=HF)
    assert cut["truncated"] is True and cut["finish_reason"] == "length"
    bad = fill_completion(row, Completion.failed("HTTP 500: boom", attempts=3), model="m", detail=HF)
    assert bad["response"] is None and bad["error"] == "HTTP 500: boom" and bad["finish_reason"] == "error"
    assert records.lineage_detail(bad, GenerateLineage).attempts == 3
    assert output_stats([out, cut, bad, out]) == {"ok": 2, "truncated": 1, "error": 1}
    records.to_table([out, cut, bad])  # all three fit the schema


class RaisingEngine:
    def generate(self, prompts, **kw):
        raise RuntimeError("engine died")


def test_complete_rows_turns_an_engine_failure_into_error_rows():
    from longcot.generate.config import SamplingConfig

    rows = [{**r, "prompt": "p"} for r in expand_samples(problem(), 2)]
    out = complete_rows(rows, RaisingEngine(), SamplingConfig(max_tokens=4), model="m", detail=HF)
    assert [r["finish_reason"] for r in out] == ["error", "error"]
    assert out[0]["error"] == "RuntimeError: engine died"
    assert records.lineage_detail(out[0], GenerateLineage).sampling.seed == sample_seed(0, rows[0]["id"])


# --- config and the output fingerprint -------------------------------------------------------------


def test_bad_generate_config_names_the_field():
    from longcot.cli.options import stage_config

    with pytest.raises(ConfigError, match=r"generate: backend: .*'tgi'"):
        stage_config(GenerateConfig, "generate", None, {"backend": "tgi"})
    with pytest.raises(ConfigError, match=r"sampling\.top_p"):
        stage_config(GenerateConfig, "generate", None, {"sampling": {"top_p": 2}})
    with pytest.raises(ConfigError, match=r"openai\.qsp: unknown field"):
        stage_config(GenerateConfig, "generate", None, {"openai": {"qsp": 1}})


def test_fingerprint_ignores_n_and_throughput_settings():
    base = GenerateConfig()
    same = GenerateConfig(sampling={"n": 8}, batch_size=2, concurrency=3, openai={"qps": 1})
    assert fingerprint(base)["hash"] == fingerprint(same)["hash"]
    for changed in ({"sampling": {"temperature": 0.7}}, {"model": "Qwen/QwQ-32B"}, {"markers": "sky"},
                    {"instruction": "Be brief."}, {"sampling": {"max_tokens": 9}}):
        assert fingerprint(GenerateConfig(**changed))["hash"] != fingerprint(base)["hash"], changed


def test_claim_output_resumes_refuses_sets_aside_or_overwrites(tmp_path):
    out = tmp_path / "samples.jsonl"
    cfg = GenerateConfig()
    assert claim_output(out, cfg, has_records=False) == out and fingerprint_path(out).exists()
    write_records(out, [expand_samples(problem(), 1)[0]])
    assert claim_output(out, GenerateConfig(sampling={"n": 4}), has_records=True) == out  # resume, more samples
    hot = GenerateConfig(sampling={"temperature": 0.7})
    with pytest.raises(ConfigError, match=r"sampling\.temperature: 0\.0 -> 0\.7"):
        claim_output(out, hot, has_records=True)
    beside = claim_output(out, hot.model_copy(update={"if_changed": "new_output"}), has_records=True)
    assert beside == tmp_path / f"samples.{fingerprint(hot)['hash']}.jsonl" and fingerprint_path(beside).exists()
    assert json.loads(fingerprint_path(out).read_text())["hash"] == fingerprint(cfg)["hash"]  # untouched
    assert claim_output(out, hot.model_copy(update={"if_changed": "overwrite"}), has_records=True) == out
    assert not existing_ids(out) and json.loads(fingerprint_path(out).read_text())["hash"] == fingerprint(hot)["hash"]
    foreign = tmp_path / "foreign.jsonl"
    write_records(foreign, [problem()])
    with pytest.raises(ConfigError, match="foreign.jsonl.generate.json is missing"):
        claim_output(foreign, cfg, has_records=True)


# --- HFGenerator on the embedded model ---------------------------------------------------------------


@pytest.fixture(scope="module")
def generator(embedded_model):
    from longcot.generate.hf import HFGenerator

    return HFGenerator(embedded_model, batch_size=4, threads=1)


def chat(generator, text):
    return render_prompt(generator.tokenizer, [{"role": "user", "content": text}])


def test_hf_batched_greedy_matches_one_at_a_time(generator):
    prompts = [chat(generator, q) for q in ("What is 2 + 2?", "Name a colour of the sky on a clear day, please.",
                                             "Say hi.")]
    assert generator.tokenizer.padding_side == "left"
    batched = generator.generate(prompts, max_tokens=6)
    single = [generator.generate([p], max_tokens=6)[0] for p in prompts]
    assert [c.text for c in batched] == [c.text for c in single]
    assert all(c.text.strip() and c.finish_reason in ("stop", "length") for c in batched)
    assert [c.prompt_tokens for c in batched] == [generator.count_tokens(p) for p in prompts]
    assert all(c.output_tokens <= 6 for c in batched)
    assert any(c.finish_reason == "length" and c.output_tokens == 6 for c in batched)


def test_hf_in_place_cache_generates_what_the_default_cache_does(generator):
    import torch

    from longcot.generate.backend import Sampling

    prompts = [chat(generator, q) for q in ("What is 2 + 2?", "Name a colour of the sky on a clear day, please.")]
    enc = generator._encode(prompts)
    kwargs = generator._generate_kwargs(enc["input_ids"].shape[1], Sampling(12, 0.0, 1.0), [None, None])
    with torch.inference_mode():
        ours = generator.model.generate(**enc, **kwargs)
        kwargs.pop(generator._cache_arg)
        default = generator.model.generate(**enc, **kwargs)
    assert torch.equal(ours, default)


def test_in_place_cache_writes_each_step_into_one_buffer(generator):
    import torch

    from longcot.generate.hf import in_place_cache

    cache = in_place_cache(generator.model, capacity=8)
    steps = [torch.randn(2, 3, 5, 4)] + [torch.randn(2, 3, 1, 4) for _ in range(3)]  # a prefill, then decoding
    for step in steps:
        keys, values = cache.update(step, step + 1, 0)
    buffer = cache.layers[0].buffers[0]
    assert torch.equal(keys, torch.cat(steps, dim=-2)) and torch.equal(values, torch.cat(steps, dim=-2) + 1)
    assert buffer.shape[-2] == 8 and keys.data_ptr() == buffer.data_ptr()  # written in place, not concatenated
    steps += [torch.randn(2, 3, 1, 4) for _ in range(2)]  # past its capacity the buffer doubles
    for step in steps[-2:]:
        keys, values = cache.update(step, step + 1, 0)
    assert torch.equal(keys, torch.cat(steps, dim=-2)) and cache.layers[0].buffers[0].shape[-2] == 18
    long = in_place_cache(generator.model, capacity=10_000)  # a long max_tokens: twice the prompt, not 10,000
    long.update(steps[0], steps[0], 0)
    assert long.layers[0].buffers[0].shape[-2] == 10


def test_in_place_cache_keeps_a_models_sliding_window_layers():
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from longcot.generate.hf import cache_keyword, in_place_cache

    torch.manual_seed(0)  # a tiny random model: 2 full-attention layers, then 2 that attend to the last 5 tokens
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                                         num_attention_heads=4, num_key_value_heads=2, use_sliding_window=True,
                                         sliding_window=5, max_window_layers=2)).eval()
    ids = torch.randint(1, 100, (2, 9))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # a left-padded row
    kw = dict(input_ids=ids, attention_mask=mask, max_new_tokens=20, do_sample=False, pad_token_id=0, eos_token_id=None)
    cache = in_place_cache(model, 29)
    with torch.inference_mode():
        assert torch.equal(model.generate(**kw, **{cache_keyword(model): cache}), model.generate(**kw))
    assert [type(layer).__name__ for layer in cache.layers] == ["InPlaceLayer"] * 2 + ["DynamicSlidingWindowLayer"] * 2


def test_hf_sampling_is_per_row_seeded_whatever_the_batch(generator):
    a, b, c = (chat(generator, q) for q in ("Tell me a word.", "Pick a number.", "Name an animal."))
    kw = dict(max_tokens=6, temperature=1.0, top_p=0.95)
    first = generator.generate([a, b, c], seed=[11, 22, 33], **kw)
    again = generator.generate([c, a], seed=[33, 11], **kw)
    assert again[0].text == first[2].text and again[1].text == first[0].text
    others = generator.generate([a, a, a, a], seed=[1, 2, 3, 4], **kw)
    assert len({o.text for o in others}) > 1  # different seeds, different samples


def test_hf_stream_yields_the_same_text_and_reports_the_finish(generator):
    prompt = chat(generator, "What is 2 + 2?")
    finished = []
    pieces = list(generator.stream(prompt, max_tokens=6, on_finish=finished.append))
    whole = generator.generate([prompt], max_tokens=6)[0]
    assert len(pieces) >= 2 and "".join(pieces) == whole.text
    assert finished[0].text == whole.text and finished[0].output_tokens == whole.output_tokens


def test_hf_engine_runs_every_forward_pass_on_one_thread_of_its_own(generator):
    """OpenMP keeps a team of worker threads for each thread that calls into torch; with two teams on the same cores
    libgomp stops spinning between operations, and generating took 1.4x as long (bench/RESULTS.md). So the engine's
    model runs on one thread, whichever thread calls it: Ray Data's batch thread, serve's, or a stream."""
    from concurrent.futures import ThreadPoolExecutor

    prompt = chat(generator, "Say hi.")
    seen = set()
    hook = generator.model.register_forward_pre_hook(lambda module, args: seen.add(threading.get_ident()))
    try:
        generator.generate([prompt], max_tokens=2)
        with ThreadPoolExecutor(1) as other:
            other.submit(generator.generate, [prompt], max_tokens=2).result()
        list(generator.stream(prompt, max_tokens=2))
    finally:
        hook.remove()
    assert len(seen) == 1 and threading.get_ident() not in seen


def test_an_interrupted_process_does_not_wait_for_the_engines_generation(embedded_model, tmp_path):
    """The engine's torch thread is a daemon: Ctrl-C during a long batch ends the process now, not once the batch is
    done, as when the calling thread generated itself. Each step is slowed to 50 ms, so the batch is still
    generating when the interrupt comes."""
    import subprocess
    import sys
    import textwrap

    steps = tmp_path / "steps"
    script = textwrap.dedent(f"""
        import os, signal, threading, time
        from longcot.generate.hf import HFGenerator
        from longcot.generate.prompting import render_prompt
        engine = HFGenerator({embedded_model!r}, threads=1, dtype="float32")
        log = open({str(steps)!r}, "a", buffering=1)
        engine.model.register_forward_pre_hook(lambda module, args: (time.sleep(0.05), log.write("step\\n")) and None)
        prompt = render_prompt(engine.tokenizer, [{{"role": "user", "content": "Count from 1 to 1000."}}])
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a shell's background job starts with it ignored
        threading.Timer(2.0, os.kill, (os.getpid(), signal.SIGINT)).start()
        try:
            engine.generate([prompt], max_tokens=1500)
        except KeyboardInterrupt:
            log.write("interrupted\\n")
            raise
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    lines = steps.read_text().split()
    assert done.returncode != 0 and "KeyboardInterrupt" in done.stderr and "interrupted" in lines
    assert lines.index("interrupted") > 5 and len(lines) - lines.index("interrupted") <= 3  # gone mid-batch


def test_hf_prompt_longer_than_the_context_is_an_error_row(generator):
    too_long = "word " * (generator.context_length + 10)
    out = generator.generate([too_long, chat(generator, "Say hi.")], max_tokens=2)
    assert out[0].finish_reason == "error" and "context" in out[0].error
    assert out[1].finish_reason in ("stop", "length")


def test_drop_error_records_for_retry_keeps_the_rest(tmp_path):
    from longcot.generate.samples import drop_error_records
    from longcot.recordfiles import RecordWriter, load_records

    rows = expand_samples(problem(), 4)
    made = [fill_completion({**r, "prompt": "p"}, Completion("ok", 1, 1, "stop") if i % 2 else
                            Completion.failed("HTTP 503"), model="m", detail=HF) for i, r in enumerate(rows)]
    for out in (tmp_path / "s.jsonl", tmp_path / "parts"):
        with RecordWriter(out) as w:
            w.write(made[:2])
            w.write(made[2:])
        assert drop_error_records(out) == 2
        assert [r["id"] for r in load_records(out)] == [made[1]["id"], made[3]["id"]]
        assert drop_error_records(out) == 0


def test_a_second_run_on_the_same_output_is_refused(tmp_path):
    from longcot.generate.stage import _exclusive, generate_records

    out = tmp_path / "s.jsonl"
    with _exclusive(out):
        with pytest.raises(ConfigError, match="another generate run is writing to it"):
            generate_records([problem()], GenerateConfig(), output_path=out, rejected_path=tmp_path / "r.jsonl",
                             progress=False, echo=False)
