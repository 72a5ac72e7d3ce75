"""How long a LoRA trains: a step count from the data (``llm.max_examples`` cuts the epochs), the
clock only under ``llm.budget_minutes``, the plan printed before training and recorded, and the CPU
guard judging the planned length."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from helpers import chat_record
from models import demo_texts, make_tiny_llama, make_tokenizer

from ragd_train.errors import RagdTrainError
from ragd_train.jsonl_io import write_jsonl
from ragd_train.llm.estimates import check_cpu_feasible, cpu_step_seconds
from ragd_train.llm.lora_config import LoraTrainingConfig, plan_lora, steps_per_epoch


def test_the_step_count_comes_from_the_data_and_max_examples() -> None:
    cfg = LoraTrainingConfig(base_model="x")  # defaults: 3 epochs, batch 4, 64 examples
    epoch = steps_per_epoch(210, cfg.batch_size)
    plan = plan_lora(cfg, epoch, None, cfg.batch_size)
    assert (plan["steps"], plan["full_steps"], plan["limited_by"]) == (16, 3 * 53, "llm.max_examples")
    assert plan["from_clock"] is False and plan["estimate_s"] is None
    few = plan_lora(cfg, steps_per_epoch(5, 4), 2.0, 4)  # 5 examples x 3 epochs < 64: every epoch
    assert (few["steps"], few["limited_by"], few["estimate_s"]) == (6, "llm.epochs", 12.0)
    # the same data and settings give the same count whatever the step time, unless the clock is asked
    assert plan_lora(cfg, epoch, 1000.0, 4)["steps"] == plan_lora(cfg, epoch, 0.01, 4)["steps"] == 16
    timed = LoraTrainingConfig(base_model="x", budget_minutes=1)
    clock = plan_lora(timed, epoch, 20.0, 4)
    assert (clock["steps"], clock["limited_by"], clock["from_clock"]) == (3, "llm.budget_minutes", True)
    roomy = plan_lora(timed, epoch, 1.0, 4)  # 16 steps fit a minute: the data decides
    assert (roomy["steps"], roomy["from_clock"]) == (16, False)


def test_the_cpu_guard_judges_the_planned_length() -> None:
    records = [chat_record(3500)] * 210  # the demo's RAFT data: about 1000 tokens an example
    cfg = LoraTrainingConfig(base_model="llama3.2:1b", max_cpu_hours=2)
    with pytest.raises(RagdTrainError, match="llm.max_examples"):
        check_cpu_feasible(cfg, 1.24e9, records, threads=2)  # every epoch: ~35 h
    planned = check_cpu_feasible(cfg, 1.24e9, records, threads=2, examples=32)
    assert 1 < planned["hours"] < 2
    # the default length on the demo model: 16 steps of 4 x ~1400 tokens at estimates.py's bf16 rate
    step = cpu_step_seconds(0.135e9, 1400, 4, 2, checkpointing=False, bf16=True)
    assert 16 * step / 60 < 15


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny-llama") / "tiny-llama"
    return make_tiny_llama(path, make_tokenizer(demo_texts()))


def answer(question: str) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "system", "content": "Answer from the documents."},
            {"role": "user", "content": f"Backups run nightly. {question}"},
            {"role": "assistant", "content": "Nightly."},
        ]
    }


def test_peft_trains_the_planned_steps_prints_the_plan_and_records_it(
    tiny_llama: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from ragd_train.llm.lora import train_lora

    raft = tmp_path / "raft.jsonl"
    write_jsonl(raft, [answer(f"Question {i}?") for i in range(4)])
    base = {"base_model": str(tiny_llama), "batch_size": 2, "epochs": 3, "lora_rank": 2, "max_length": 256}

    caplog.set_level(logging.INFO, logger="ragd_train")
    meta = train_lora(raft, None, tmp_path / "a", LoraTrainingConfig(**base, max_examples=6), "peft")
    plan = meta["training_plan"]
    assert (plan["steps"], plan["full_steps"], plan["limited_by"]) == (3, 6, "llm.max_examples")
    assert plan["from_clock"] is False and plan["step_time_source"] == "estimated"
    assert [h["step"] for h in meta["loss_history"]] == [1, 2, 3]
    assert [h["epoch"] for h in meta["loss_history"]] == [0.5, 1.0, 1.5]  # a second shuffle for step 3
    line = next(r.getMessage() for r in caplog.records if "steps of 2" in r.getMessage())
    assert "training a rank-2 LoRA" in line and "3 steps of 2 (1.50 epochs of 4 examples)" in line
    assert "s/step estimated" in line and "set by llm.max_examples" in line
    assert meta["base_weights"] == {"source": "directory", "path": str(tiny_llama)}

    # an explicit minutes budget: a measured step decides, and the metadata says so
    tight = LoraTrainingConfig(**base, budget_minutes=1e-6)
    clock = train_lora(raft, None, tmp_path / "b", tight, "peft")["training_plan"]
    assert (clock["steps"], clock["from_clock"], clock["limited_by"]) == (1, True, "llm.budget_minutes")
    assert clock["step_time_source"] == "measured" and clock["step_time_s"] is not None
    assert any("the step count comes from the clock" in r.getMessage() for r in caplog.records)


def test_micro_batches_and_checkpointing_change_memory_not_the_adapter(
    tiny_llama: Path, tmp_path: Path
) -> None:
    """A step's batch through the model one example at a time (the default), all at once, or with
    gradient checkpointing: the token-weighted sum of the micro-batches' gradients is the batch's
    gradient, so the adapters agree to float rounding, while a different batch size does not."""
    from safetensors.torch import load_file

    from ragd_train.llm.lora import train_lora
    from ragd_train.llm.lora_config import ADAPTER_FILE

    raft = tmp_path / "raft.jsonl"
    # answers of different lengths: a plain mean over micro-batches would weigh their tokens unequally
    records = [answer(f"Question {i}?") for i in range(4)]
    for i, record in enumerate(records):
        record["messages"][-1]["content"] = "Nightly, " * (1 + 3 * i) + "at two."
    write_jsonl(raft, records)
    base = {"base_model": str(tiny_llama), "batch_size": 4, "epochs": 2, "lora_rank": 2, "max_length": 256}
    runs = {
        "micro 1": {"micro_batch_size": 1},
        "micro 4": {"micro_batch_size": 4},
        "checkpointing": {"micro_batch_size": 2, "gradient_checkpointing": True},
        "batch 2": {"batch_size": 2, "micro_batch_size": 1},
    }
    weights, losses = {}, {}
    for name, extra in runs.items():
        cfg = LoraTrainingConfig(**(base | extra), precision="fp32", lora_dropout=0.0)
        meta = train_lora(raft, None, tmp_path / name.replace(" ", "-"), cfg, "peft")
        weights[name] = load_file(str(tmp_path / name.replace(" ", "-") / ADAPTER_FILE))
        losses[name] = [h["loss"] for h in meta["loss_history"]]
    assert meta["backend_options"]["training"]["micro_batch_size"] == 1
    for name in ("micro 4", "checkpointing"):
        assert losses[name] == pytest.approx(losses["micro 1"], rel=1e-4), name
        for key, tensor in weights["micro 1"].items():
            assert torch_allclose(weights[name][key], tensor), (name, key)
    assert len(losses["batch 2"]) != len(losses["micro 1"]) or any(
        not torch_allclose(weights["batch 2"][k], t) for k, t in weights["micro 1"].items()
    )


def torch_allclose(a: Any, b: Any) -> bool:
    import torch

    return bool(torch.allclose(a, b, rtol=1e-4, atol=1e-6))
