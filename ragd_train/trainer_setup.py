"""What the sentence-transformers trainers of every model target share: arguments and progress."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("ragd_train")


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
    """A TrainerCallback: Rich bar with loss on a terminal, a log line per step otherwise."""
    from transformers import TrainerCallback

    from ragd_train.progress import is_terminal

    class Progress(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001
            self.bar = None
            if is_terminal():
                from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

                self.bar = Progress(
                    TextColumn("training"),
                    BarColumn(),
                    TextColumn("{task.completed}/{task.total}"),
                    TextColumn("loss {task.fields[loss]}"),
                    TimeRemainingColumn(),
                )
                self.task = self.bar.add_task("train", total=total_steps, loss="-")
                self.bar.start()

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
            if logs and "loss" in logs:
                entry = {
                    "step": state.global_step,
                    "epoch": round(state.epoch or 0, 3),
                    "loss": float(logs["loss"]),
                }
                history.append(entry)
                if self.bar is not None:
                    self.bar.update(self.task, completed=state.global_step, loss=f"{entry['loss']:.4f}")
                else:
                    log.info(
                        "step %d/%d epoch %.2f loss %.4f",
                        state.global_step,
                        total_steps,
                        entry["epoch"],
                        entry["loss"],
                    )

        def on_train_end(self, args, state, control, **kwargs):  # noqa: ANN001
            if self.bar is not None:
                self.bar.stop()

    return Progress()
