"""What the sentence-transformers trainers of every model target share: arguments and progress."""

from __future__ import annotations

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
