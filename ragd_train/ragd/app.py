"""The ``ragd`` executable: ragd's own Typer app with ``train`` added, or ours alone without ragd.

ragd 1.0.10 has no plugin mechanism, so ragd-train ships a ``ragd`` console script too. When ragd is
importable it is *ragd's* app (every command, option, help panel and ``--version`` are ragd's own)
with one extra command, ``train``; nothing of ragd's is replaced. Without ragd it offers only
``ragd train ...`` and says that ragd is not installed. ``ragd-train`` always runs our CLI alone.
"""

from __future__ import annotations

from typing import Any

PANEL = "Fine-tuning (ragd-train)"
HELP = "Fine-tune retrieval models on your indexed documents (ragd-train)."


def ragd_app() -> Any | None:
    """ragd's own Typer app with a ``train`` command that hands its arguments to our click group.

    Typer may vendor its own click, so our group cannot be added as a click command; a
    pass-through Typer command keeps every option and ``--help`` of ``train`` ours, and everything
    else ragd's. None when ragd is not importable.
    """
    try:
        import typer
        from ragd.cli import app
    except ImportError:
        return None
    if not any(c.name == "train" for c in app.registered_commands):

        def train(ctx):  # type: ignore[no-untyped-def]
            from ragd_train.cli import train as group

            group.main(args=list(ctx.args), prog_name="ragd train")

        train.__annotations__ = {"ctx": typer.Context, "return": None}  # real types for Typer

        app.command(
            "train",
            help=HELP,
            rich_help_panel=PANEL,
            add_help_option=False,
            context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        )(train)
    return app


def main() -> Any:
    """Console-script entry point of ``ragd``."""
    app = ragd_app()
    if app is None:
        from ragd_train.cli import main as standalone

        return standalone.main(prog_name="ragd")
    return app(prog_name="ragd")
