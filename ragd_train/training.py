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
        use_cpu=device == "cpu",
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
    """How long a training loop may run: at most ``epochs`` passes, cut to what fits in
    ``minutes`` of wall clock (0 = no limit), or exactly ``max_steps`` when set. ``prefix`` names
    the config fields (``training.embedding_``, ``reranker.``) in messages."""

    epochs: int
    minutes: float
    max_steps: int | None
    prefix: str


def measure_step_time(trainer: Any, accumulation: int) -> float:
    """Seconds one optimizer step takes: forward and backward of the first mini-batch of the
    trainer's own data loader through its loss, timed after one warm-up pass; the gradients are
    discarded."""
    model = trainer.model
    model.train()
    inputs = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    times = []
    for _ in range(3):
        t = time.perf_counter()
        trainer.compute_loss(model, dict(inputs)).backward()  # it pops the labels
        times.append(time.perf_counter() - t)
    model.zero_grad(set_to_none=True)
    return min(times[1:]) * accumulation


def plan_steps(budget: TrainingBudget, steps_per_epoch: int, step_time: float | None) -> dict[str, Any]:
    """The optimizer steps to train: ``max_steps`` when set, else every epoch, cut to the steps
    that fit the budget at the measured ``step_time``."""
    full = steps_per_epoch * budget.epochs
    if budget.max_steps is not None:
        steps, limit = budget.max_steps, f"{budget.prefix}max_steps"
    elif step_time and budget.minutes > 0 and budget.minutes * 60 < full * step_time:
        steps, limit = max(1, int(budget.minutes * 60 // step_time)), f"{budget.prefix}budget_minutes"
    else:
        steps, limit = full, f"{budget.prefix}epochs"
    return {
        "steps": steps,
        "epoch_steps": steps_per_epoch,
        "full_steps": full,
        "limited_by": limit,
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
    """Measure the step time (unless ``max_steps`` fixes the count), set the trainer's steps to
    the plan and attach the progress callback; training then starts from the seed again."""
    from transformers import set_seed

    timed = budget.max_steps is None and budget.minutes > 0
    step_time = measure_step_time(trainer, accumulation) if timed else None
    plan = plan_steps(budget, steps_per_epoch, step_time)
    trainer.args.max_steps = plan["steps"]
    trainer.add_callback(progress_callback(plan["steps"], history))
    set_seed(seed)  # the timing pass drew dropout masks
    return plan


def plan_message(plan: dict[str, Any], what: str, examples: int, batch: int) -> str:
    """One line, printed before training starts: what is trained, for how long, and why."""
    line = f"training {what}: {plan['steps']} steps of {batch}"
    if plan["steps"] > plan["epoch_steps"]:
        line += f" ({plan['steps'] / plan['epoch_steps']:.2f} epochs of {examples} examples)"
    else:
        line += f" ({min(examples, plan['steps'] * batch)} of {examples} examples)"
    if plan["step_time_s"]:
        line += f", {plan['step_time_s']:.2f} s/step measured, about {plan['estimate_s'] / 60:.1f} min"
    if plan["limited_by"].endswith("budget_minutes"):
        line += (
            f"; cut from {plan['full_steps']} steps to fit the {plan['budget_minutes']:g}-minute budget "
            f"({plan['limited_by']})"
        )
    else:
        line += f"; set by {plan['limited_by']}"
    return line
