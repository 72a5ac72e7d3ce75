"""What the sentence-transformers trainers of every model target share: arguments and progress."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def trainer_arguments(
    args_cls: Any,
    staging: Path,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    warmup_ratio: float,
    seed: int,
    device: str | None,
    **extra: Any,
) -> Any:
    """Training arguments: seeded, a log line per step, no checkpoints, nothing reported elsewhere."""
    import torch

    return args_cls(
        output_dir=str(staging / "checkpoints"),
        num_train_epochs=epochs,
        per_device_train_batch_size=batch_size,
        learning_rate=learning_rate,
        warmup_steps=warmup_ratio,  # a float below 1 is a ratio (transformers v5)
        seed=seed,
        data_seed=seed,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=(device or "").startswith("cpu"),
        dataloader_pin_memory=torch.cuda.is_available(),
        **extra,
    )


def progress_callback(total_steps: int, history: list[dict[str, float]]) -> Any:
    """A TrainerCallback that records the loss history and reports each step (``StepReporter``)."""
    from transformers import TrainerCallback

    from ragd_train.progress import StepReporter

    class Progress(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001
            self.reporter = StepReporter(total_steps)

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
            if logs and "loss" in logs:
                if not math.isfinite(float(logs["loss"])):
                    from ragd_train.errors import RagdTrainError

                    raise RagdTrainError(
                        f"training diverged: the loss became {logs['loss']} at step {state.global_step}; "
                        "lower the learning rate (nothing was saved)"
                    )
                entry = {
                    "step": state.global_step,
                    "epoch": round(state.epoch or 0, 3),
                    "loss": float(logs["loss"]),
                }
                history.append(entry)
                self.reporter.step(entry["step"], entry["epoch"], entry["loss"])

        def on_train_end(self, args, state, control, **kwargs):  # noqa: ANN001
            self.reporter.close()

    return Progress()


@dataclass(frozen=True)
class TrainingBudget:
    """How long a training loop runs: at most ``epochs`` passes and ``max_examples`` examples
    (None = no cap), or exactly ``max_steps`` when set; with ``minutes`` > 0 (an option, off by
    default) the steps are also cut to what fits that much wall clock. ``prefix`` names the config
    fields (``embeddings.``, ``reranker.``) in messages."""

    epochs: int
    minutes: float
    max_steps: int | None
    prefix: str
    max_examples: int | None = None


def measure_step_time(trainer: Any, accumulation: int) -> float:
    """Seconds one optimizer step takes: forward and backward of the first mini-batch of the
    trainer's own data loader through its loss, timed after one warm-up pass; the gradients are
    discarded (no weight changes)."""
    from ragd_train.precision import autocast

    model = trainer.model
    model.train()
    inputs = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    # the trainer's accelerator autocasts only once training starts: do as it will
    precision = "bf16" if getattr(trainer.args, "bf16", False) else "fp32"
    times = []
    for _ in range(3):
        t = time.perf_counter()
        with autocast(precision, model.device.type):
            loss = trainer.compute_loss(model, dict(inputs))  # it pops the labels
        loss.backward()
        times.append(time.perf_counter() - t)
    model.zero_grad(set_to_none=True)
    return min(times[1:]) * accumulation


def plan_steps(
    budget: TrainingBudget, steps_per_epoch: int, step_time: float | None, batch: int = 1
) -> dict[str, Any]:
    """The optimizer steps to train, from the data and the settings: ``max_steps`` when set, else
    every epoch, cut to ``max_examples`` (``batch`` examples a step); only an explicit
    ``minutes`` budget cuts them further, by the measured ``step_time`` (``clock`` is then true)."""
    full = steps_per_epoch * budget.epochs
    clock = False
    if budget.max_steps is not None:
        steps, limit = budget.max_steps, f"{budget.prefix}max_steps"
    else:
        steps, limit = full, f"{budget.prefix}epochs"
        if budget.max_examples is not None and -(-budget.max_examples // batch) < full:
            steps, limit = -(-budget.max_examples // batch), f"{budget.prefix}max_examples"
        if step_time and budget.minutes > 0 and budget.minutes * 60 < steps * step_time:
            steps, limit = max(1, int(budget.minutes * 60 // step_time)), f"{budget.prefix}budget_minutes"
            clock = True
    return {
        "steps": steps,
        "epoch_steps": steps_per_epoch,
        "full_steps": full,
        "limited_by": limit,
        "from_clock": clock,
        "max_examples": budget.max_examples,
        "budget_minutes": budget.minutes,
        "step_time_s": round(step_time, 3) if step_time else None,
        "estimate_s": round(steps * step_time, 1) if step_time else None,
    }


def plan_training(
    trainer: Any,
    accumulation: int,
    steps_per_epoch: int,
    budget: TrainingBudget,
    seed: int,
    history: list[dict[str, float]],
) -> dict[str, Any]:
    """Measure the step time (for the printed estimate; it decides the step count only under an
    explicit minutes budget), set the trainer's steps to the plan and attach the progress callback;
    training then starts from the seed again."""
    from transformers import set_seed

    step_time = measure_step_time(trainer, accumulation)
    batch = trainer.args.per_device_train_batch_size * accumulation
    plan = plan_steps(budget, steps_per_epoch, step_time, batch)
    trainer.args.max_steps = plan["steps"]
    trainer.add_callback(progress_callback(plan["steps"], history))
    set_seed(seed)  # the timing pass drew dropout masks
    return plan


def plan_message(plan: dict[str, Any], what: str, examples: int, batch: int, timing: str = "measured") -> str:
    """One line, printed before training starts: what is trained, for how long, and why
    (``timing``: how the step time was found, ``measured`` or ``estimated``)."""
    line = f"training {what}: {plan['steps']} steps of {batch}"
    if plan["steps"] > plan["epoch_steps"]:
        line += f" ({plan['steps'] / plan['epoch_steps']:.2f} epochs of {examples} examples)"
    else:
        line += f" ({min(examples, plan['steps'] * batch)} of {examples} examples)"
    if plan["step_time_s"]:
        line += f", {plan['step_time_s']:.2f} s/step {timing}, about {plan['estimate_s'] / 60:.1f} min"
    if plan["limited_by"].endswith("budget_minutes"):
        line += (
            f"; cut from {plan['full_steps']} steps to fit the {plan['budget_minutes']:g}-minute budget "
            f"({plan['limited_by']}: the step count comes from the clock, so it depends on the "
            "machine's load)"
        )
    else:
        line += f"; set by {plan['limited_by']}"
    return line
