"""LoRA training pieces on transformers + PEFT, shared by the peft and unsloth backends, ``fuse`` and
the LLM report: loading the base, chat tokenisation with the prompt masked out of the loss, the
training loop, held-out loss, and the adapter saved as ``adapters.safetensors`` + PEFT's
``adapter_config.json``.
"""

from __future__ import annotations

import logging
import math
import random
from pathlib import Path
from typing import Any

from ragd_train.errors import RagdTrainError
from ragd_train.llm.lora_config import ADAPTER_CONFIG, ADAPTER_FILE, LoraTrainingConfig, steps_per_epoch
from ragd_train.progress import StepReporter

log = logging.getLogger("ragd_train")


IGNORE = -100  # label of tokens that do not count in the loss


def load_base(weights: Path | str, *, dtype: Any = None) -> tuple[Any, Any]:
    """A causal LM and its tokenizer from a model dir, a hub id, or a GGUF file (dequantised)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = dtype or torch.float32
    path = Path(weights)
    if path.is_file() and path.suffix == ".gguf":
        kwargs: dict[str, Any] = {"gguf_file": path.name}
        source = str(path.parent)
    else:
        kwargs, source = {}, str(weights)
    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **kwargs)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not getattr(tokenizer, "chat_template", None):
        raise RagdTrainError(f"{weights}: the tokenizer has no chat template; use an instruct/chat model")
    return model, tokenizer


def check_targets(model: Any, targets: list[str]) -> list[str]:
    """The target modules the model has; an error names the ones it lacks."""
    import torch

    names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    missing = [t for t in targets if t not in names]
    if missing:
        raise RagdTrainError(
            f"llm.lora_target_modules: the model has no {missing}; its linear layers are {sorted(names)}"
        )
    return list(targets)


def _ids(tokenizer: Any, messages: list[dict[str, str]], *, add_generation_prompt: bool) -> list[int]:
    out = tokenizer.apply_chat_template(
        messages, tokenize=True, add_generation_prompt=add_generation_prompt, return_dict=False
    )
    if isinstance(out, dict) or hasattr(out, "input_ids"):
        out = out["input_ids"]
    return list(out)


def tokenize_chat(tokenizer: Any, record: dict[str, Any]) -> tuple[list[int], list[int]]:
    """Input ids of the whole conversation and labels that count only the assistant's answer."""
    messages = record["messages"]
    full = _ids(tokenizer, messages, add_generation_prompt=False)
    prompt = _ids(tokenizer, messages[:-1], add_generation_prompt=True)
    cut = 0
    while cut < min(len(prompt), len(full)) and prompt[cut] == full[cut]:
        cut += 1
    return full, [IGNORE] * cut + full[cut:]


def tokenize_records(
    tokenizer: Any, records: list[dict[str, Any]], max_length: int
) -> tuple[list[tuple[list[int], list[int]]], int]:
    """Tokenised examples; those longer than ``max_length`` are skipped (never trained truncated)."""
    kept, skipped = [], 0
    for record in records:
        ids, labels = tokenize_chat(tokenizer, record)
        if len(ids) > max_length:
            skipped += 1
            continue
        kept.append((ids, labels))
    if skipped:
        log.warning("%d examples are longer than llm.max_length=%d tokens: skipped", skipped, max_length)
    return kept, skipped


def collate(batch: list[tuple[list[int], list[int]]], pad_id: int, *, left: bool = True) -> dict[str, Any]:
    """Padded tensors. Left padding lines the answers up at the end, so that only their logits
    need computing; right padding (with the model's own loss) never lets a token see a pad, even
    where a fused attention kernel ignores the mask (Unsloth's)."""
    import torch

    width = max(len(ids) for ids, _ in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, (ids, labs) in enumerate(batch):
        span = slice(width - len(ids), width) if left else slice(0, len(ids))
        input_ids[row, span] = torch.tensor(ids)
        labels[row, span] = torch.tensor(labs)
        mask[row, span] = 1
    out = {"input_ids": input_ids, "attention_mask": mask, "labels": labels}
    if left:
        out["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
    return out


def batch_loss(model: Any, batch: dict[str, Any], *, slice_logits: bool = True) -> Any:
    """Mean cross-entropy over the answer tokens.

    With ``slice_logits`` the model computes logits for the answer span only
    (``logits_to_keep``): with a 50k-130k vocabulary the prompt's logits would otherwise
    dominate memory and time. Without it, the model's own loss (Unsloth's fused one).
    """
    import torch

    if not slice_logits:
        return model(**batch).loss
    labels = batch["labels"]
    answer = (labels != IGNORE).any(dim=0).nonzero()
    keep = labels.shape[1] - int(answer[0]) + 1 if len(answer) else 2
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs, logits_to_keep=keep).logits
    targets = labels[:, -keep + 1 :]
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=IGNORE
    )


def _answer_tokens(labels: list[int]) -> int:
    """Tokens that count in the loss (each predicted from the one before it)."""
    return sum(1 for label in labels[1:] if label != IGNORE)


def accumulate_gradients(
    model: Any,
    items: list[tuple[list[int], list[int]]],
    cfg: LoraTrainingConfig,
    *,
    pad_id: int,
    device: str,
    autocast_dtype: Any = None,
    slice_logits: bool = True,
) -> float:
    """Forward and backward over one optimizer step's ``items``, ``cfg.micro_batch_size`` at a time;
    the batch's mean answer-token loss. Each micro-batch's loss is weighted by its share of the
    batch's answer tokens, so the summed gradient is the whole batch's."""
    import torch

    micro = max(1, min(cfg.micro_batch_size, cfg.batch_size))
    weights = [_answer_tokens(labels) for _, labels in items]
    value = 0.0
    for first in range(0, len(items), micro):
        share = sum(weights[first : first + micro]) / max(1, sum(weights))
        batch = {
            k: v.to(device)
            for k, v in collate(items[first : first + micro], pad_id, left=slice_logits).items()
        }
        with torch.autocast(
            device_type=device.split(":")[0], dtype=autocast_dtype, enabled=autocast_dtype is not None
        ):
            loss = batch_loss(model, batch, slice_logits=slice_logits) * share
        loss.backward()
        value += float(loss.detach())
    return value


def train_loop(
    model: Any,
    examples: list[tuple[list[int], list[int]]],
    cfg: LoraTrainingConfig,
    *,
    pad_id: int,
    device: str,
    autocast_dtype: Any = None,
    slice_logits: bool = True,
    steps: int | None = None,
) -> list[dict[str, float]]:
    """AdamW with linear warm-up and decay over the trainable (LoRA) parameters; the loss curve.

    ``steps`` optimizer steps (the plan's, ``lora_config.plan_lora``), each epoch a new shuffle of
    the examples; every epoch of ``cfg.epochs`` when None. Each step's ``batch_size`` examples go
    through the model ``micro_batch_size`` at a time (memory: one micro-batch's activations)."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=0.0)
    per_epoch = steps_per_epoch(len(examples), cfg.batch_size)
    total = steps if steps is not None else per_epoch * cfg.epochs
    epochs = math.ceil(total / per_epoch)
    warmup = max(1, round(0.1 * total))

    def schedule(step: int) -> float:
        return (step + 1) / warmup if step < warmup else max(0.0, (total - step) / max(1, total - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    rng = random.Random(cfg.seed)
    history: list[dict[str, float]] = []
    reporter = StepReporter(total)
    model.train()
    step = 0
    try:
        for epoch in range(epochs):
            order = list(range(len(examples)))
            rng.shuffle(order)
            for start in range(0, len(order), cfg.batch_size):
                if step >= total:
                    break
                items = [examples[i] for i in order[start : start + cfg.batch_size]]
                value = accumulate_gradients(
                    model, items, cfg, pad_id=pad_id, device=device, autocast_dtype=autocast_dtype,
                    slice_logits=slice_logits,
                )  # fmt: skip
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                if not math.isfinite(value):
                    raise RagdTrainError(f"the loss became {value} at step {step}; lower llm.learning_rate")
                done = min(start + cfg.batch_size, len(order)) / len(order)
                entry = {"step": step, "epoch": round(epoch + done, 3), "loss": value}
                history.append(entry)
                reporter.step(step, entry["epoch"], value)
    finally:
        reporter.close()
    model.eval()
    return history


def measure_step_time(
    model: Any,
    examples: list[tuple[list[int], list[int]]],
    cfg: LoraTrainingConfig,
    *,
    pad_id: int,
    device: str,
    autocast_dtype: Any = None,
    slice_logits: bool = True,
) -> float:
    """Seconds of one optimizer step's forward and backward on the first batch (no warm-up pass: a
    step on CPU takes long enough), the gradients discarded; for ``llm.budget_minutes`` only."""
    import time

    model.train()
    t = time.perf_counter()
    accumulate_gradients(
        model, examples[: cfg.batch_size], cfg, pad_id=pad_id, device=device,
        autocast_dtype=autocast_dtype, slice_logits=slice_logits,
    )  # fmt: skip
    elapsed = time.perf_counter() - t
    model.zero_grad(set_to_none=True)
    return elapsed


def eval_loss(
    model: Any,
    examples: list[tuple[list[int], list[int]]],
    *,
    pad_id: int,
    device: str,
    autocast_dtype: Any = None,
    slice_logits: bool = True,
) -> float | None:
    """Mean loss over the answer tokens of ``examples`` (None without examples)."""
    import torch

    if not examples:
        return None
    model.eval()
    total, tokens = 0.0, 0
    with torch.no_grad():
        for example in examples:
            batch = {k: v.to(device) for k, v in collate([example], pad_id, left=slice_logits).items()}
            with torch.autocast(
                device_type=device.split(":")[0], dtype=autocast_dtype, enabled=autocast_dtype is not None
            ):
                loss = batch_loss(model, batch, slice_logits=slice_logits)
            n = int((batch["labels"][:, 1:] != IGNORE).sum())
            total += float(loss) * n
            tokens += n
    return round(total / max(1, tokens), 5)


def save_adapter(model: Any, folder: Path, base_path: str) -> None:
    """``adapters.safetensors`` (LoRA weights only) and PEFT's ``adapter_config.json``."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    state = {k: v.detach().to("cpu").contiguous() for k, v in get_peft_model_state_dict(model).items()}
    save_file(state, str(folder / ADAPTER_FILE), metadata={"format": "pt"})
    config = model.peft_config["default"]
    config.base_model_name_or_path = base_path
    config.save_pretrained(str(folder))
    if not (folder / ADAPTER_CONFIG).exists():  # pragma: no cover - PEFT's file name
        raise RagdTrainError(f"PEFT wrote no {ADAPTER_CONFIG}")


def load_adapter(model: Any, folder: str | Path) -> Any:
    """Wrap ``model`` with the adapter saved in ``folder`` (as written by ``save_adapter``)."""
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
    from safetensors.torch import load_file

    config = LoraConfig.from_pretrained(str(folder))
    config.inference_mode = True
    wrapped = get_peft_model(model, config)
    result = set_peft_model_state_dict(wrapped, load_file(str(Path(folder) / ADAPTER_FILE)))
    missing = [k for k in getattr(result, "unexpected_keys", []) if "lora" in k]
    if missing:
        raise RagdTrainError(f"{folder}: adapter tensors do not fit the model: {missing[:3]}")
    wrapped.eval()
    return wrapped
