"""Fast tests of the serving logic that needs no server: protocol validation, reasoning split (whole and
streamed), stop sequences, config, the Serve config files of both backends, and '@student' resolution."""

from __future__ import annotations

import importlib.util
import json
import random
import sys

import pytest
import yaml
from pydantic import ValidationError

from conftest import AIME_TRACES, MATH_TRACES
from longcot.errors import ConfigError, ResourceError
from longcot.serve import protocol as p
from longcot.serve.backends import (
    HFServeBackend,
    VLLMServeBackend,
    backend_for,
    require_vllm,
    vllm_reasoning_parser,
)
from longcot.serve.config import ServeConfig
from longcot.serve.reasoning import ReasoningStream, opened_marker, split_reasoning
from longcot.serve.stage import student_serve_config
from longcot.serve.stops import StopScanner, cut_at_stop, partial_suffix


def _stream(text: str, cuts: list[int], opened: str | None = None) -> tuple[str, str]:
    pieces = [text[a:b] for a, b in zip([0] + cuts, cuts + [len(text)])]
    rs = ReasoningStream(opened)
    out = [piece for chunk in pieces for piece in rs.feed(chunk)] + rs.close()
    return ("".join(t for k, t in out if k == "reasoning"), "".join(t for k, t in out if k == "content"))


def _real_responses(n: int = 6) -> list[str]:
    out = []
    for path in (MATH_TRACES, AIME_TRACES):
        with open(path) as handle:
            for line, _ in zip(handle, range(n // 2)):
                out.append(json.loads(line)["response"])
    return out


# ------------------------------------------------------------------------------------------ reasoning


def test_split_reasoning_on_real_sky_t1_traces():
    for response in _real_responses():
        parts = split_reasoning(response)
        assert parts.reasoning and len(parts.reasoning) > 200
        assert "<|begin_of_thought|>" not in parts.reasoning and "<|end_of_thought|>" not in parts.reasoning
        assert "<|begin_of_solution|>" not in parts.content and "<|end_of_solution|>" not in parts.content
        assert parts.content == parts.content.strip()


@pytest.mark.parametrize("text,reasoning,content", [
    ("<think>\n2+2 is 4.\n</think>\n\nThe answer is \\boxed{4}.", "2+2 is 4.", "The answer is \\boxed{4}."),
    ("<|begin_of_thought|>a\n\nb<|end_of_thought|>\n<|begin_of_solution|>\nsol\n<|end_of_solution|>junk", "a\n\nb", "sol"),
    ("<think>cut off mid-thou", "cut off mid-thou", ""),
    ("just an answer\n", None, "just an answer"),
])
def test_split_reasoning_conventions(text, reasoning, content):
    parts = split_reasoning(text)
    assert (parts.reasoning, parts.content) == (reasoning, content)


def test_prompt_that_opens_the_thought():
    prompt = "<|im_start|>assistant\n<think>\n"
    assert opened_marker(prompt) == "<think>"
    assert opened_marker("<|im_start|>assistant\n") is None
    parts = split_reasoning("so 4.\n</think>\nAnswer: 4", opened="<think>")
    assert (parts.reasoning, parts.content) == ("so 4.", "Answer: 4")
    assert _stream("so 4.\n</think>\nAnswer: 4", [1, 7, 9], opened="<think>") == ("so 4.", "Answer: 4")


def test_stream_matches_whole_text_split_at_every_cut():
    texts = [
        "<think>\nLet me add.\n\nIt is 4.\n</think>\n\nThe answer is \\boxed{4}.  ",
        "  <|begin_of_thought|>\n\nstep one\n\nstep two <|end_of_thought|>\n\n<|begin_of_solution|>\n**4**\n<|end_of_solution|> x",
        "<|begin_of_thought|> never ends <|end_of_tho",
        "<|begin_of_thought|>a<|end_of_thought|>no solution marker",
        "<think></think>",
        "<thi",
        "plain text",
        "",
    ]
    for text in texts:
        want = split_reasoning(text)
        want = (want.reasoning or "", want.content)
        for cut in range(len(text) + 1):  # every single split point, and one char at a time
            assert _stream(text, [cut]) == want, (text, cut)
        assert _stream(text, list(range(1, len(text)))) == want, text


def test_stream_matches_split_on_real_traces_in_random_pieces():
    rng = random.Random(7)
    for response in _real_responses(4):
        want = split_reasoning(response)
        for _ in range(5):
            cuts = sorted(rng.sample(range(1, len(response)), 300))
            assert _stream(response, cuts) == (want.reasoning, want.content)


# ------------------------------------------------------------------------------------------ stops


def test_stop_sequences_whole_and_streamed():
    assert cut_at_stop("abc STOP def", ["STOP"]) == ("abc ", True)
    assert cut_at_stop("abc", ["x", "y"]) == ("abc", False)
    assert cut_at_stop("one two three", ["three", "two"]) == ("one ", True)
    assert partial_suffix("abc ST", ["STOP"]) == 2
    text = "The answer is 4.\n\nUser: next question"
    for cut in range(len(text) + 1):
        scanner = StopScanner(["\n\nUser:"])
        got = scanner.feed(text[:cut]) + scanner.feed(text[cut:]) + scanner.close()
        assert got == "The answer is 4." and scanner.stopped
    scanner = StopScanner(["User:"])
    assert scanner.feed("no stop here Use") + scanner.close() == "no stop here Use" and not scanner.stopped


# ------------------------------------------------------------------------------------------ protocol


def _error(schema, body) -> tuple[str, str | None]:
    with pytest.raises(ValidationError) as info:
        schema.model_validate(body)
    return p.validation_error(info.value.errors())


def test_requests_are_strict_and_errors_name_the_field():
    chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    plain = p.ChatCompletionRequest.model_validate(chat)
    assert plain.max_tokens is None and plain.stop == []  # no stop sequences: an empty list, never None
    message, param = _error(p.ChatCompletionRequest, {**chat, "max_tokens": -1})
    assert param == "max_tokens" and "greater than or equal to 1" in message
    assert _error(p.ChatCompletionRequest, {**chat, "max_tokens": "5"})[1] == "max_tokens"
    assert _error(p.ChatCompletionRequest, {**chat, "temperature": "hot"})[1] == "temperature"
    assert _error(p.ChatCompletionRequest, {"model": "m", "messages": [{"role": "robot", "content": "x"}]})[1] \
        == "messages[0].role"
    message, param = _error(p.ChatCompletionRequest, {"model": "m", "messages": [{"role": "user", "content": 5}]})
    assert param == "messages[0].content" and "more" not in message  # one message per field, not per union member
    message, param = _error(p.ChatCompletionRequest, {**chat, "max_token": 5})
    assert param == "max_token" and "Unrecognized request argument" in message
    assert _error(p.ChatCompletionRequest, {**chat, "messages": []})[1] == "messages"
    assert _error(p.ChatCompletionRequest, {**chat, "logprobs": True})[1] == "logprobs"
    assert _error(p.ChatCompletionRequest, {**chat, "presence_penalty": 0.5})[1] == "presence_penalty"
    assert _error(p.ChatCompletionRequest, {**chat, "stop": ["a", "b", "c", "d", "e"]})[1] == "stop"
    assert _error(p.CompletionRequest, {"model": "m", "prompt": ["a", 3]})[1] == "prompt[1]"
    assert _error(p.CompletionRequest, {"model": "m", "prompt": "a", "echo": True})[1] == "echo"


def test_request_details():
    req = p.ChatCompletionRequest.model_validate({
        "model": "m", "max_completion_tokens": 7, "temperature": 0, "stop": "\n\n",
        "messages": [{"role": "developer", "content": "be brief"},
                     {"role": "user", "content": [{"type": "text", "text": "2+"}, {"type": "text", "text": "2?"}]},
                     {"role": "assistant", "content": "<think>", "reasoning_content": "ignored"}],
        "continue_final_message": True,
    })
    assert req.max_tokens == 7 and req.stop == ["\n\n"]
    assert [m.for_template() for m in req.messages] == [
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "<think>"}]
    message, param = _error(p.ChatCompletionRequest, {
        "model": "m", "messages": [{"role": "user", "content": "x"}], "continue_final_message": True})
    assert "assistant" in message
    assert p.CompletionRequest.model_validate({"model": "m", "prompt": ["a", "b"]}).prompt == ["a", "b"]
    assert p.openai_error("bad", param="n") == {"error": {"message": "bad", "type": "invalid_request_error",
                                                          "param": "n", "code": None}}


# ------------------------------------------------------------------------------------------ config


def test_config_validation():
    with pytest.raises(ValidationError, match="max_replicas"):
        ServeConfig.model_validate({"autoscaling": {"min_replicas": 3, "max_replicas": 2}})
    with pytest.raises(ValidationError, match="storage URI"):
        ServeConfig.model_validate({"vllm": {"lora_path": "/local/adapters"}})
    with pytest.raises(ValidationError, match="max_ongoing_requests"):
        ServeConfig.model_validate({"batching": {"max_batch_size": 64}, "max_ongoing_requests": 8})
    with pytest.raises(ValidationError):
        ServeConfig.model_validate({"api_key_env": "not a var"})
    with pytest.raises(ValidationError, match="extra"):
        ServeConfig.model_validate({"prot": 1})


def test_bad_yaml_block_is_a_config_error_naming_the_field(tmp_path):
    from longcot.cli.options import stage_config

    path = tmp_path / "job.yaml"
    path.write_text("serve:\n  port: 99999\n  batching: {max_batch_size: 0}\n")
    with pytest.raises(ConfigError) as info:
        stage_config(ServeConfig, "serve", path, {})
    assert "serve: port" in str(info.value) and "serve: batching.max_batch_size" in str(info.value)


def test_model_ids_and_replica_options():
    assert ServeConfig().model_id() == "embedded:smollm2-135m-instruct"
    assert ServeConfig(adapter="/a").model_id() == "longcot-student"
    assert ServeConfig(adapter="/a", served_model_name="mine").model_id() == "mine"
    fixed = ServeConfig(num_replicas=2, resources={"num_cpus": 2}).replica_options()
    assert fixed == {"max_ongoing_requests": 32, "ray_actor_options": {"num_cpus": 2.0}, "num_replicas": 2}
    scaled = ServeConfig(autoscaling={"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 6}).replica_options()
    assert "num_replicas" not in scaled
    assert scaled["autoscaling_config"]["max_replicas"] == 4 and scaled["autoscaling_config"]["target_ongoing_requests"] == 6


# ------------------------------------------------------------------------------------------ backends


def test_hf_serve_config_file_is_a_valid_serve_deploy_config(tmp_path):
    from ray.serve.schema import ServeDeploySchema

    (tmp_path / "adapter").mkdir()
    cfg = ServeConfig(adapter=str(tmp_path / "adapter"), port=8123, api_key_env="LONGCOT_KEY", smoke_test=True,
                      autoscaling={"min_replicas": 1, "max_replicas": 3})
    backend = backend_for(cfg, tmp_path)
    assert isinstance(backend, HFServeBackend)
    path = backend.write_serve_config(tmp_path / "serve.yaml")
    data = yaml.safe_load(path.read_text())
    schema = ServeDeploySchema.model_validate(data)
    app = schema.applications[0]
    assert app.import_path == "longcot.serve.endpoint:build_app" and schema.http_options.port == 8123
    assert app.args["adapter"] == str((tmp_path / "adapter").resolve())
    assert "smoke_test" not in app.args and app.args["api_key_env"] == "LONGCOT_KEY"
    ServeConfig.model_validate(app.args)  # what build_app receives on the cluster is a valid config


def test_vllm_llm_config_is_valid_for_ray_serve_llm_without_importing_vllm(tmp_path):
    # ray's LLMConfig model (the one ray.serve.llm re-exports) imports without vLLM
    from ray.llm._internal.serve.core.configs.llm_config import LLMConfig
    from ray.serve.schema import ServeDeploySchema

    cfg = ServeConfig(backend="vllm", model="Qwen/Qwen2.5-1.5B-Instruct", served_model_name="student",
                      autoscaling={"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 16},
                      resources={"num_gpus": 1, "accelerator_type": "L4"},
                      vllm={"lora_path": "s3://bucket/adapters", "engine_kwargs": {"max_model_len": 4096}})
    backend = backend_for(cfg, tmp_path)
    assert isinstance(backend, VLLMServeBackend)
    llm = backend.llm_config()
    parsed = LLMConfig.model_validate(llm)
    assert parsed.model_id == "student" and parsed.accelerator_type == "L4"
    assert parsed.lora_config.dynamic_lora_loading_path == "s3://bucket/adapters"
    assert parsed.engine_kwargs["enable_lora"] is True and parsed.engine_kwargs["max_model_len"] == 4096
    assert parsed.deployment_config["autoscaling_config"]["max_replicas"] == 4
    assert backend.app_args() == {"llm_configs": [llm]}  # LLMServingArgs; its module needs vLLM to import
    data = yaml.safe_load(backend.write_serve_config(tmp_path / "serve.yaml").read_text())
    app = ServeDeploySchema.model_validate(data).applications[0]
    assert app.import_path == "ray.serve.llm:build_openai_app"
    assert "vllm" not in sys.modules and "ray.serve.llm" not in sys.modules


def test_vllm_embedded_model_resolves_to_its_directory(tmp_path, embedded_model):
    backend = backend_for(ServeConfig(backend="vllm"), tmp_path)
    assert backend.llm_config()["model_loading_config"]["model_source"] == embedded_model


def test_vllm_lora_names_need_a_model_id_without_colon(tmp_path):
    cfg = ServeConfig(backend="vllm", vllm={"lora_path": "gs://b/loras"})  # default id embedded:... has a ':'
    with pytest.raises(ConfigError, match="served_model_name"):
        backend_for(cfg, tmp_path).llm_config()


def test_vllm_reasoning_parser_follows_the_thought_markers_and_the_vocabulary():
    think_vocab = {"<think>": 1, "</think>": 2, "a": 3}
    assert vllm_reasoning_parser("think", think_vocab) == "deepseek_r1"
    assert vllm_reasoning_parser(None, think_vocab) == "deepseek_r1"  # no card: <think> is tried
    assert vllm_reasoning_parser("think", {"<": 1, "think": 2, ">": 3}) is None  # spelled in pieces: vLLM's
    assert vllm_reasoning_parser("sky", think_vocab) is None  # parsers would fail every chat request
    assert vllm_reasoning_parser("none", think_vocab) is None


@pytest.fixture()
def think_tokenizer_dir(tmp_path, embedded_model):
    """A model directory whose tokenizer holds <think> and </think> as single tokens (as R1 distills' do)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(embedded_model)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<think>", "</think>"]})
    tokenizer.save_pretrained(tmp_path / "think-model")
    return tmp_path / "think-model"


def test_vllm_engine_gets_the_reasoning_parser_the_model_can_use(tmp_path, think_tokenizer_dir, embedded_model):
    from ray.llm._internal.serve.core.configs.llm_config import LLMConfig

    from longcot.generate.prompting import StudentPrompt
    from longcot.train.card import StudentCard

    def engine_kwargs(**settings) -> dict:
        llm = backend_for(ServeConfig(backend="vllm", served_model_name="student", **settings), tmp_path).llm_config()
        return LLMConfig.model_validate(llm).engine_kwargs

    assert engine_kwargs(model=str(think_tokenizer_dir))["reasoning_parser"] == "deepseek_r1"
    assert "reasoning_parser" not in engine_kwargs(model=str(think_tokenizer_dir), reasoning="raw")
    # SmolLM2 spells <think> in several tokens: no vLLM parser can split it, answers stay as generated
    assert "reasoning_parser" not in engine_kwargs(model=embedded_model)
    assert engine_kwargs(model=embedded_model, vllm={"reasoning_parser": "qwen3"})["reasoning_parser"] == "qwen3"
    picked = engine_kwargs(model=str(think_tokenizer_dir), vllm={"engine_kwargs": {"reasoning_parser": "granite"}})
    assert picked["reasoning_parser"] == "granite"  # engine_kwargs pass through untouched
    StudentCard(base_model="m", mode="lora", prompt=StudentPrompt(), markers="sky", cutoff_len=64).save(
        think_tokenizer_dir)
    assert "reasoning_parser" not in engine_kwargs(model=str(think_tokenizer_dir))  # trained on Sky-T1 markers
    assert "reasoning_parser" not in engine_kwargs(model="Qwen/Qwen2.5-1.5B-Instruct")  # tokenizer not here
    assert "vllm" not in sys.modules and "ray.serve.llm" not in sys.modules


def test_vllm_replicas_ask_for_their_gpus_so_a_job_sees_them():
    assert ServeConfig(backend="vllm").resources.num_gpus == 1
    assert ServeConfig(backend="vllm", vllm={"engine_kwargs": {"tensor_parallel_size": 2}}).resources.num_gpus == 2
    assert ServeConfig(backend="vllm", resources={"num_gpus": 4}).resources.num_gpus == 4
    assert ServeConfig(backend="hf").resources.num_gpus == 0


def test_vllm_fails_fast_without_vllm_or_gpu(ray_local, tmp_path):
    with pytest.raises(ConfigError, match="api_key_env"):
        backend_for(ServeConfig(backend="vllm", api_key_env="K"), tmp_path).validate()
    with pytest.raises(ResourceError, match="GPU"):  # this cluster has no GPU
        backend_for(ServeConfig(backend="vllm"), tmp_path).check()
    if importlib.util.find_spec("vllm") is None:
        with pytest.raises(ResourceError, match="needs vLLM"):
            require_vllm()


# ------------------------------------------------------------------------------------------ job stage


def test_resolve_student_from_train_artifacts():
    merged = student_serve_config(ServeConfig(model="@student"), {"student_model": "/runs/x/train/merged"})
    assert (merged.model, merged.adapter) == ("/runs/x/train/merged", None)
    assert merged.model_id() == "longcot-student"
    lora = student_serve_config(ServeConfig(model="@student"), {"student_base": "embedded:smollm2-135m-instruct",
                                                          "student_adapter": "/runs/x/train/adapter"})
    assert (lora.model, lora.adapter) == ("embedded:smollm2-135m-instruct", "/runs/x/train/adapter")
    explicit = student_serve_config(ServeConfig(adapter="@student"), {"student_adapter": "/a"})
    assert explicit.adapter == "/a"
    with pytest.raises(ConfigError, match="train stage"):
        student_serve_config(ServeConfig(model="@student"), {})
    assert student_serve_config(ServeConfig(), {}) == ServeConfig()


# ------------------------------------------------------------------------------------------ CLI refusals


def _cli(argv: list[str], capsys) -> tuple[int, str]:
    from longcot.cli import main

    with pytest.raises(SystemExit) as info:
        main(argv)
    return info.value.code, capsys.readouterr().err


def test_cli_refuses_bad_options_before_starting_anything(capsys, monkeypatch):
    import socket

    code, err = _cli(["serve", "--port", "99999"], capsys)
    assert code == 2 and "serve: port" in err
    monkeypatch.delenv("LONGCOT_UNSET_KEY", raising=False)
    code, err = _cli(["serve", "--api-key-env", "LONGCOT_UNSET_KEY"], capsys)
    assert code == 2 and "LONGCOT_UNSET_KEY is not set" in err
    code, err = _cli(["serve", "--adapter", "/no/such/adapter"], capsys)
    assert code == 2 and "adapter" in err
    code, err = _cli(["serve", "--model", "/no/such/model"], capsys)
    assert code == 2 and "model: /no/such/model does not exist" in err
    code, err = _cli(["serve", "--model", "embedded:gpt-17"], capsys)
    assert code == 2 and "unknown embedded model" in err
    code, err = _cli(["serve", "--model", "@student"], capsys)
    assert code == 2 and "@student" in err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        code, err = _cli(["serve", "--port", str(busy.getsockname()[1])], capsys)
    assert code == 2 and "cannot listen" in err


# ------------------------------------------------------------------------------------------ batching


def test_generate_rows_groups_by_sampling_and_keeps_each_rows_place(embedded_model):
    from longcot.generate.hf import HFGenerator
    from longcot.serve.endpoint import Row, generate_rows

    engine = HFGenerator(embedded_model, device="cpu")
    rows = [Row("2 + 2 =", None, 3, 0.0, 1.0), Row("The sky is", None, 2, 0.0, 1.0), Row("Red and", None, 2, 0.0, 1.0),
            Row("One, two,", None, 3, 0.0, 0.5)]  # greedy ignores top_p: batches with the first row
    out = generate_rows(engine, rows)
    assert len(out) == 4
    assert [c.output_tokens <= 3 for c in out] == [True] * 4
    alone = engine.generate(["The sky is", "Red and"], max_tokens=2)
    assert [c.text for c in out[1:3]] == [c.text for c in alone]
    greedy = engine.generate(["2 + 2 =", "One, two,"], max_tokens=3)
    assert [out[0].text, out[3].text] == [c.text for c in greedy]  # each completion in its row's place
    assert rows[0].sampling_key() == rows[3].sampling_key() != rows[1].sampling_key()
