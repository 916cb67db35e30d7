"""Fast tests of the train stage's pure parts: config, chat examples, loss mask, packing, recipe."""

from __future__ import annotations

import json

import pytest

from longcot.config import parse_job
from longcot.errors import ConfigError, RejectRow
from longcot.records import new_problem
from longcot.train.config import DataSettings, TrainConfig
from longcot.train.examples import (
    IGNORE,
    chat_messages,
    collate_packs,
    encode,
    encode_batch,
    length_report,
    pack_batch,
    plan_packs,
)
from longcot.train.recipe import (
    check_deepspeed,
    deepspeed_config,
    offloads,
    steps_for,
    training_arguments,
)


@pytest.fixture(scope="module")
def tokenizer(embedded_model):
    from longcot.models import load_tokenizer

    return load_tokenizer("embedded:smollm2-135m-instruct", padding_side="right")


def record(problem="What is 2+3?", response="2+3=5, so \\boxed{5}.", **extra):
    row = new_problem(problem, source="test:train")
    row.update(response=response, **extra)
    return row


# --- config ---------------------------------------------------------------------------------------


def test_defaults_are_a_cpu_lora_run():
    cfg = TrainConfig()
    assert cfg.mode == "lora" and cfg.lora.target_modules == "all-linear"
    assert not cfg.bf16() and not cfg.checkpointing_activations() and cfg.torch_backend() == "gloo"


@pytest.mark.parametrize(
    "block, field",
    [
        ({"precision": "fp16"}, "fp16 needs GPUs"),
        ({"backend": "nccl"}, "nccl needs GPUs"),
        ({"deepspeed": "zero3_offload"}, "needs use_gpu"),
        ({"attn_implementation": "flash_attention_2"}, "needs use_gpu"),
        ({"deepspeed": "zero9"}, "train.deepspeed"),
        ({"mode": "qlora"}, "train.mode"),
        ({"lora": {"rank": 0}}, "train.lora.rank"),
        ({"checkpoints": {"run_name": "a b"}}, "train.checkpoints.run_name"),
        ({"data": {"cutoff": 10}}, "train.data.cutoff: unknown field"),
    ],
)
def test_bad_train_config_names_the_field(block, field):
    with pytest.raises(ConfigError) as err:
        parse_job({"train": block}, "job.yaml")
    assert field in str(err.value)
    assert str(err.value).startswith("job.yaml: train")


def test_gpu_options_are_accepted_with_use_gpu():
    cfg = TrainConfig(use_gpu=True, precision="bf16", backend="nccl", deepspeed="zero3_offload")
    assert cfg.bf16() and cfg.checkpointing_activations() and cfg.torch_backend() == "nccl"
    assert cfg.resources.num_gpus == 1  # use_gpu asks one GPU per worker when resources name none
    assert TrainConfig(use_gpu=True, resources={"num_gpus": 2}).resources.num_gpus == 2
    assert TrainConfig(use_gpu=True).bf16()  # auto precision on GPU


# --- recipe ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["zero2", "zero3", "zero2_offload", "zero3_offload"])
def test_shipped_deepspeed_presets(name):
    ds = deepspeed_config(name)
    assert ds["zero_optimization"]["stage"] == (2 if name.startswith("zero2") else 3)
    assert offloads(ds) == name.endswith("_offload")
    assert ds["train_micro_batch_size_per_gpu"] == "auto"


def test_deepspeed_json_path_errors(tmp_path):
    bad = tmp_path / "ds.json"
    bad.write_text('{"zero_optimization": {"stage": 2},\n "bf16": }')
    with pytest.raises(ConfigError, match=r"ds.json:2: invalid JSON"):
        deepspeed_config(str(bad))
    with pytest.raises(ConfigError, match="cannot read"):
        deepspeed_config(str(tmp_path / "missing.json"))
    offload = tmp_path / "offload.json"
    offload.write_text(json.dumps({"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"}}}))
    with pytest.raises(ConfigError, match="offloads to CPU, which needs use_gpu"):
        check_deepspeed(TrainConfig(deepspeed=str(offload)))


def test_training_arguments_for_a_gpu_zero3_offload_run(tmp_path):
    """The GPU-only settings as far as their configuration: transformers accepts them and fills DeepSpeed's autos."""
    from transformers import TrainingArguments
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    cfg = TrainConfig(use_gpu=True, deepspeed="zero3_offload", per_device_batch_size=2, gradient_accumulation_steps=4)
    kwargs = training_arguments(cfg, output_dir=str(tmp_path), max_steps=100)
    assert kwargs["bf16"] and kwargs["activation_checkpointing"] and kwargs["ddp_backend"] == "nccl"
    assert kwargs["warmup_steps"] == 10 and not kwargs["use_cpu"]
    ds = HfTrainerDeepSpeedConfig(kwargs["deepspeed"])
    args = TrainingArguments(**{**kwargs, "deepspeed": None, "use_cpu": True, "ddp_backend": None})
    ds.trainer_config_process(args)
    assert ds.config["train_micro_batch_size_per_gpu"] == 2 and ds.config["gradient_accumulation_steps"] == 4
    assert ds.config["bf16"]["enabled"] is True
    assert ds.is_zero3() and ds.is_offload()


def test_scaling_config_from_yaml_settings():
    from longcot.train.recipe import scaling_config

    cfg = TrainConfig.model_validate(
        {"num_workers": 8, "use_gpu": True,
         "resources": {"num_cpus": 16, "accelerator_type": "H100", "resources": {"train_node": 1}}}
    )
    scaling = scaling_config(cfg)
    assert scaling.num_workers == 8 and scaling.use_gpu and scaling.accelerator_type == "H100"
    assert scaling.resources_per_worker == {"CPU": 16, "GPU": 1, "train_node": 1}
    assert scaling_config(TrainConfig()).resources_per_worker == {"CPU": 1}


def test_steps_for_splits_sequences_over_workers():
    cfg = TrainConfig(num_workers=2, per_device_batch_size=2, epochs=3)
    assert steps_for(cfg, 10) == (9, 3)  # 5 per worker -> 3 micro-batches per epoch
    assert steps_for(cfg.model_copy(update={"max_steps": 7}), 10) == (7, 3)
    with pytest.raises(ConfigError, match="cannot feed 2 workers"):
        steps_for(cfg, 1)


# --- examples -------------------------------------------------------------------------------------


def test_chat_messages_prefers_dlcot_and_rejects_what_cannot_train():
    data = DataSettings(system_prompt="Be brief.")
    msgs = chat_messages(record(dlcot_response="short"), data)
    assert [m["role"] for m in msgs] == ["system", "user", "assistant"]
    assert msgs[-1]["content"] == "short" and msgs[1]["content"].startswith("What is 2+3?\n\n")
    assert chat_messages(record(), DataSettings(instruction="Answer."))[0]["content"] == "What is 2+3?\n\nAnswer."
    with pytest.raises(RejectRow, match="verdict is incorrect"):
        chat_messages(record(correct=False, verdict="incorrect"), data)
    assert chat_messages(record(correct=False), DataSettings(only_correct=False))
    with pytest.raises(RejectRow, match="no response"):
        chat_messages(record(response="  "), data)
    with pytest.raises(RejectRow, match="no dlcot_response"):
        chat_messages(record(), DataSettings(response_field="dlcot_response"))


def test_encode_masks_everything_but_the_assistant_turn(tokenizer):
    msgs = [{"role": "user", "content": "What is 2+3?"}, {"role": "assistant", "content": "It is 5."}]
    ex = encode(msgs, tokenizer, cutoff_len=256)
    assert len(ex.input_ids) == len(ex.labels) == ex.length and not ex.truncated
    trained = [t for t, lab in zip(ex.input_ids, ex.labels) if lab != IGNORE]
    assert tokenizer.decode(trained).strip() == "It is 5.<|im_end|>"
    n_prompt = ex.labels.index(next(lab for lab in ex.labels if lab != IGNORE))
    prompt = tokenizer.apply_chat_template(msgs[:1], tokenize=False, add_generation_prompt=True)
    assert tokenizer.decode(ex.input_ids[:n_prompt]) == prompt


def test_encode_cutoff_truncates_or_rejects(tokenizer):
    msgs = [{"role": "user", "content": "Count."}, {"role": "assistant", "content": " ".join(["one"] * 200)}]
    ex = encode(msgs, tokenizer, cutoff_len=64)
    assert ex.truncated and len(ex.input_ids) == 64 and ex.length > 200
    with pytest.raises(RejectRow, match="exceed cutoff_len 64"):
        encode(msgs, tokenizer, cutoff_len=64, truncation="drop")
    with pytest.raises(RejectRow, match="the prompt alone has"):
        encode(msgs, tokenizer, cutoff_len=16)


def test_encode_batch_keeps_every_row_with_its_reason(embedded_model):
    from longcot.records import to_table

    rows = [record(), record("Q2", response=None), record("Q3", response="x " * 300)]
    table = encode_batch(
        to_table(rows), model="embedded:smollm2-135m-instruct", data={"cutoff_len": 128, "truncation": "drop"}
    )
    got = table.to_pylist()
    assert [r["id"] for r in got] == [r["id"] for r in rows]
    assert got[0]["reject_reason"] is None and got[0]["input_ids"]
    assert "no response" in got[1]["reject_reason"] and got[1]["length"] is None
    assert "exceed cutoff_len" in got[2]["reject_reason"] and got[2]["truncated"] and got[2]["length"] > 128


def test_plan_packs_first_fit_decreasing():
    packs = plan_packs([5, 3, 8, 2, 7], capacity=10)
    assert sorted(sorted(p) for p in packs) == [[0], [1, 4], [2, 3]]  # 8+2, 7+3, 5
    assert all(sum([5, 3, 8, 2, 7][i] for i in p) <= 10 for p in packs)
    with pytest.raises(ValueError, match="more than the pack capacity"):
        plan_packs([11], capacity=10)


def test_pack_batch_and_collate_flatten_without_padding():
    import pyarrow as pa

    from longcot.train.examples import ENCODED_SCHEMA

    table = pa.Table.from_pylist(
        [
            {"id": "a", "input_ids": [1, 2, 3], "labels": [IGNORE, 2, 3], "length": 3, "truncated": False},
            {"id": "b", "input_ids": [4, 5], "labels": [IGNORE, 5], "length": 2, "truncated": False},
            {"id": "c", "input_ids": None, "labels": None, "length": None, "reject_reason": "no response"},
        ],
        schema=ENCODED_SCHEMA,
    )
    packed = pack_batch(table, capacity=8, packing=True).to_pylist()
    assert len(packed) == 1 and packed[0]["tokens"] == 5
    assert len(pack_batch(table, capacity=8, packing=False)) == 2
    batch = collate_packs([packed[0]["input_ids"]], [packed[0]["labels"]])
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4, 5]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1]]  # restarts: attention stays per example
    assert batch["labels"].tolist() == [[IGNORE, 2, 3, IGNORE, 5]]


def test_length_report_counts_what_the_cutoff_cuts():
    report = length_report([100, 300, 900, 5000], cutoff_len=1024)
    assert report.truncated == 1 and report.truncated_share == 0.25
    assert report.quantiles["max"] == 5000 and report.quantiles["min"] == 100
    assert dict(report.histogram) == {"<=256": 1, "<=512": 1, "<=1,024": 1, ">1,024": 1}
    assert "truncates 1 of 4 examples (25.0%)" in "\n".join(report.lines())
    assert length_report([], 64).lines() == ["no examples were tokenized"]


# --- CLI ------------------------------------------------------------------------------------------


def test_cli_reports_bad_options_in_one_line(tmp_path, capsys):
    from longcot.cli import main

    records = tmp_path / "r.jsonl"
    records.write_text(json.dumps(record()) + "\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--input", str(records), "--set", "lora.rank=0", "--runs-dir", str(tmp_path / "runs")])
    assert exit_info.value.code == 2
    assert "train: lora.rank" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--input", str(tmp_path / "missing.jsonl"), "--runs-dir", str(tmp_path / "runs")])
    assert exit_info.value.code == 3
    assert "missing.jsonl: no such file" in capsys.readouterr().err


def test_the_same_config_builds_the_same_fresh_lora_adapters(embedded_model):
    """LoRA's A matrices start at random: a seeded job must start from the same ones every time (else the
    same job trains a different student on every run)."""
    from types import SimpleNamespace

    import torch

    from longcot.train.worker import build_model

    def adapters(config: TrainConfig) -> dict[str, torch.Tensor]:
        model = build_model(config, SimpleNamespace(bf16=False))  # the only training argument it reads
        torch.rand(3)  # whatever ran before the next build must not matter
        return {k: v.detach().clone() for k, v in model.named_parameters() if "lora_A" in k}

    config = TrainConfig.model_validate({"model": embedded_model, "lora": {"rank": 4, "alpha": 8}})
    first, second = adapters(config), adapters(config)
    assert first and first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    other = adapters(config.model_copy(update={"seed": config.seed + 1}))
    assert not all(torch.equal(first[k], other[k]) for k in first), "the seed chooses the initial adapters"


def test_the_packs_do_not_depend_on_the_order_the_records_come_in(embedded_model, ray_local, tmp_path):
    """An earlier stage writes its records in the order its Ray Data blocks finish, which changes from run to
    run: the same records and seed must make the same packs in the same shuffled order, whatever that order."""
    from longcot.recordfiles import write_records
    from longcot.train.stage import prepare_data

    rows = [record(f"What is {a} + {b}?", f"{a} + {b} = {a + b}, so \\boxed{{{a + b}}}.")
            for a in range(1, 9) for b in range(1, 4)]
    config = TrainConfig.model_validate({"model": embedded_model, "data": {"packing": True, "cutoff_len": 256}})

    def packs(order: list[dict], name: str) -> list:
        write_records(tmp_path / f"{name}.jsonl", order)
        data = prepare_data(config, tmp_path / f"{name}.jsonl", tmp_path / f"{name}.rejected.jsonl", progress=False)
        return [row["input_ids"] for row in data.packs.take_all()]

    as_written = packs(rows, "as_written")
    assert len(as_written) > 2
    assert packs(rows[::-1], "reversed") == as_written
    assert packs(rows[5:] + rows[:5], "rotated") == as_written
