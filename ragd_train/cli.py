"""The ``ragd`` command: ``ragd train ...`` maps onto workflow targets; heavy imports stay lazy."""

from __future__ import annotations

import functools
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ragd_train.errors import RagdTrainError


def friendly_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Print a RagdTrainError as one line and exit 1, without a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except RagdTrainError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(1)
        except OSError as exc:  # a read-only workspace, a full disk: one line naming the file
            where = f"{exc.filename}: " if exc.filename else ""
            click.echo(f"Error: {where}{exc.strerror or exc}", err=True)
            sys.exit(1)

    return wrapper


def workflow_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options every workflow-backed command shares."""
    options = [
        click.option(
            "--workspace",
            type=click.Path(file_okay=False, path_type=Path),
            default=None,
            help="Snakemake working directory [default: $RAGD_HOME or ~/.ragd].",
        ),
        click.option(
            "--configfile",
            "configfiles",
            multiple=True,
            type=click.Path(exists=True, dir_okay=False),
            help="Extra config merged over config/config.yaml (repeatable).",
        ),
        click.option(
            "--cores",
            type=click.IntRange(min=1),
            default=None,
            help="CPU cores for local runs [default: all].",
        ),
        click.option(
            "--jobs", type=click.IntRange(min=1), default=None, help="Parallel jobs (cluster profiles)."
        ),
        click.option("--profile", default=None, help="Snakemake profile: a path, or a name under profiles/."),
        click.option("--dry-run", "-n", is_flag=True, help="Show what would run, run nothing."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _corpus_overrides(corpus: str, source: str | None, path: str | None) -> dict[str, Any]:
    if source or path:
        if not (source and path):
            raise click.UsageError("--source and --path go together")
        from ragd_train.errors import resolved

        return {"corpora": {corpus: {"source": source, "path": str(resolved(path, field="--path"))}}}
    return {}


class DimsType(click.ParamType):
    """Matryoshka dims on the command line: comma-separated integers, 'auto' or 'none'."""

    name = "dims"

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        if not isinstance(value, str) or value in ("auto", "none"):
            return value
        try:
            return [int(d) for d in value.split(",")]
        except ValueError:
            self.fail("comma-separated integers, 'auto' or 'none'", param, ctx)


def _click_type(field: Any) -> Any:
    """The click type of a setting: its choices or its numeric range, from the declaration."""
    import typing

    import annotated_types

    annotation = field.annotation
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Literal:
        return click.Choice(list(typing.get_args(annotation)))
    if any(typing.get_origin(a) is typing.Literal for a in args):
        return DimsType()  # a choice or a list of numbers (matryoshka_dims)
    base = args[0] if args else annotation
    bounds = {type(m).__name__: m for m in field.metadata if isinstance(m, annotated_types.BaseMetadata)}
    low = bounds.get("Ge") or bounds.get("Gt")
    high = bounds.get("Le") or bounds.get("Lt")
    low_value = getattr(low, "ge", getattr(low, "gt", None))
    high_value = getattr(high, "le", getattr(high, "lt", None))
    if base is int:
        return click.IntRange(low_value, high_value) if (low or high) else int
    if base is float:
        if not (low or high):
            return float
        return click.FloatRange(low_value, high_value, min_open="Gt" in bounds, max_open="Lt" in bounds)
    return str


def setting_options(command: str) -> Callable[..., Any]:
    """The flags of ``command`` that set a workflow setting, derived from their declarations in
    ``ragd_train/settings.py`` (type, bounds, help, default). They are built when the command is
    used (its help or a call), so ``ragd train --help`` does not load the settings models."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        func.__setting_flags__ = command  # type: ignore[attr-defined]
        return func

    return decorate


def _setting_flags(command: str) -> list[click.Option]:
    from ragd_train.settings import flag_help, flags_of

    return [
        click.Option(
            ["--" + flag.replace("_", "-"), flag],
            type=_click_type(field),
            default=None,
            help=flag_help(field),
        )
        for flag, (_dotted, field) in flags_of(command).items()
    ]


class SettingsCommand(click.Command):
    """A command whose setting flags (``setting_options``) are added on first use, before the
    workflow options."""

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        command = getattr(self.callback, "__setting_flags__", None)
        if command is not None and not getattr(self, "_flags_added", False):
            self._flags_added = True
            names = [p.name for p in self.params]
            at = names.index("workspace") if "workspace" in names else len(names)
            self.params[at:at] = _setting_flags(command)
        return super().get_params(ctx)


def flag_of(field: str) -> str | None:
    """The ``--flag`` that sets a dotted setting, if any command has one."""
    from ragd_train.settings import commands, flags_of

    for command in commands():
        for flag, (dotted, _field) in flags_of(command).items():
            if dotted == field:
                return "--" + flag.replace("_", "-")
    return None


WORKFLOW_OPTIONS = ("workspace", "configfiles", "cores", "jobs", "profile", "dry_run")


def _split(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The shared workflow options, and the command's own flags."""
    opts = {k: options.pop(k) for k in WORKFLOW_OPTIONS}
    return opts, options


def _flag_overrides(command: str, flags: dict[str, Any]) -> dict[str, Any]:
    """Config overrides from the flags the user gave (click passes None for the others)."""
    from ragd_train.settings import flags_of

    out: dict[str, Any] = {}
    for name, (field, _declared) in flags_of(command).items():
        if flags.get(name) is not None:
            *sections, key = field.split(".")
            target = out
            for section in sections:
                target = target.setdefault(section, {})
            target[key] = flags[name]
    return out


def _keep_configfiles(opts: dict[str, Any]) -> None:
    """A config file that is not a regular file (``--configfile <(...)``, a pipe) can be read only
    once, and both this check and Snakemake read it: it is read here, once, and kept in the
    workspace (``.ragd-train/configfile-<sha>.yaml``) for both."""
    import hashlib
    import os
    import stat

    from ragd_train.errors import InputError
    from ragd_train.jsonl_io import atomic_open

    kept = []
    for name in opts["configfiles"]:
        try:
            regular = stat.S_ISREG(os.stat(name).st_mode)
            data = b"" if regular else Path(name).read_bytes()
        except OSError as exc:
            raise InputError(f"config file cannot be read ({exc.strerror})", path=name) from None
        if regular:
            kept.append(name)
            continue
        workspace = _workspace(opts["workspace"])
        path = workspace / ".ragd-train" / f"configfile-{hashlib.sha256(data).hexdigest()[:12]}.yaml"
        with atomic_open(path, "wb") as handle:
            handle.write(data)
        kept.append(str(path))
    opts["configfiles"] = tuple(kept)


def _check_overrides(
    opts: dict[str, Any], overrides: dict[str, Any], targets: list[str], corpus: str | None = None
) -> None:
    """Validate the config files and the flags' values before Snakemake reads them (a YAML error
    names its file and line; a bad value names the flag; an unknown ``corpus`` lists the known
    ones). For an embeddings target the base model and Matryoshka dims are checked too, so a dry
    run reports what the real run would refuse."""
    from ragd_train.config import default_config_path, has_path, load_config
    from ragd_train.errors import InputError
    from ragd_train.runner import check_embedding_config

    _keep_configfiles(opts)
    if not default_config_path().exists():
        return  # not a workflow checkout: Snakemake reports it
    try:
        config = load_config(opts["configfiles"], overrides or None, quiet=True)
        if corpus is not None and corpus not in config.get("corpora", {}):
            raise RagdTrainError(unknown_corpus(corpus, config))
        if corpus is not None:
            from ragd_train.config import resolve_corpus, workflow_dir

            try:
                source = resolve_corpus(config["corpora"][corpus], [workflow_dir()])  # a symlink loop
            except InputError as exc:
                raise RagdTrainError(f"corpus '{corpus}': {exc}") from None
            if not Path(source["path"]).exists():
                raise RagdTrainError(
                    f"corpus '{corpus}': {source['path']}: field 'path': path does not exist"
                )
        if any("-embeddings" in target for target in targets):
            check_embedding_config(config, [str(default_config_path()), *opts["configfiles"]])
    except InputError as exc:
        field = exc.field or ""
        if exc.path != "command line" and not (overrides and has_path(overrides, field.split("."))):
            raise
        flag = flag_of(field) or f"the value for {field}"
        raise click.UsageError(f"{flag}: {exc.reason}") from None


def unknown_corpus(corpus: str, config: dict[str, Any]) -> str:
    known = ", ".join(sorted(config.get("corpora", {}))) or "none"
    return f"unknown corpus '{corpus}' (known: {known})"


def _run(
    targets: list[str], opts: dict[str, Any], overrides: dict[str, Any], corpus: str | None = None
) -> Path:
    from ragd_train.runner import run_targets

    _check_overrides(opts, overrides, targets, corpus)
    workspace = _workspace(opts["workspace"])
    run_targets(
        targets,
        workspace,
        configfiles=opts["configfiles"],
        overrides=overrides or None,
        cores=opts["cores"],
        jobs=opts["jobs"],
        profile=opts["profile"],
        dry_run=opts["dry_run"],
    )
    return workspace


def _merge(*dicts: dict[str, Any]) -> dict[str, Any]:
    from ragd_train.config import deep_merge

    merged: dict[str, Any] = {}
    for d in dicts:
        merged = deep_merge(merged, d)
    return merged


@click.group(
    epilog="ragd is not installed here: only `ragd train ...` is available; install ragd for the rest."
)
@click.version_option(
    package_name="ragd-train", message="ragd-train, version %(version)s (ragd is not installed)"
)
def main() -> None:
    """ragd-train's `ragd train ...` (the `ragd` executable when ragd itself is not installed)."""


@main.group()
def train() -> None:
    """Fine-tune models on your indexed documents (a Snakemake workflow underneath)."""


train.command_class = SettingsCommand  # its commands' setting flags come from ragd_train/settings.py


corpus_option = click.option(
    "--corpus",
    default="demo",
    show_default=True,
    help="Corpus name from the config (the shipped demo, or your own).",
)
source_option = click.option(
    "--source",
    type=click.Choice(["ragd", "documents", "jsonl", "beir"]),
    default=None,
    help="Declare the corpus on the fly: where its chunks come from.",
)
path_option = click.option("--path", default=None, help="With --source: the ragd data dir, folder or file.")


def data_option(what: str) -> Callable[..., Any]:
    return click.option(
        "--data",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        default=None,
        help=f"Train on this JSONL/JSON file {what}instead of the corpus's generated data.",
    )


def model_output_option(kind: str) -> Callable[..., Any]:
    return click.option(
        "--output",
        "-o",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help=f"Where the model goes [default: models/<corpus>-{kind} in the workspace].",
    )


@train.command("generate-data")
@corpus_option
@source_option
@path_option
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also copy train.jsonl here (.json writes a JSON array).",
)
@setting_options("generate-data")
@workflow_options
@friendly_errors
def generate_data(
    corpus: str,
    source: str | None,
    path: str | None,
    output: Path | None,
    **options: Any,
) -> None:
    """Generate training data (queries, hard negatives, quality filter) from a corpus."""
    opts, flags = _split(options)
    if output is not None:
        from ragd_train.jsonl_io import check_output_path

        check_output_path(output)  # refused before the workflow runs, not after
    overrides = _merge(_corpus_overrides(corpus, source, path), _flag_overrides("generate-data", flags))
    workspace = _run(
        [f"training_data/{corpus}/train.jsonl", f"training_data/{corpus}/test.jsonl"],
        opts,
        overrides,
        corpus,
    )
    if output and not opts["dry_run"]:
        from ragd_train.jsonl_io import read_jsonl, write_jsonl

        write_jsonl(output, read_jsonl(workspace / "training_data" / corpus / "train.jsonl"))
        click.echo(f"Training data written to {output}")


@train.command("embeddings")
@corpus_option
@source_option
@path_option
@data_option("")
@model_output_option("embeddings")
@setting_options("embeddings")
@workflow_options
@friendly_errors
def embeddings(
    corpus: str,
    source: str | None,
    path: str | None,
    data: Path | None,
    output: Path | None,
    **options: Any,
) -> None:
    """Fine-tune the embedding model into models/<corpus>-embeddings (loss: embeddings.loss)."""
    opts, flags = _split(options)
    overrides = _flag_overrides("embeddings", flags)
    _train_model(
        "embeddings", (corpus, source, path), data, output, overrides, opts, _fit_embeddings, _print_ragd_hint
    )


def _train_model(
    kind: str,
    corpus: tuple[str, str | None, str | None],
    data: Path | None,
    output: Path | None,
    overrides: dict[str, Any],
    opts: dict[str, Any],
    fit: Callable[[Path, Path, dict[str, Any]], None],
    hint: Callable[[Path, list[str]], None],
) -> None:
    """Build ``models/<corpus>-<kind>`` through the workflow, or train on ``data`` directly."""
    if output is not None and output.exists():
        raise click.BadParameter(f"{output} already exists; choose a new directory", param_hint="--output")
    if data is None:
        target = f"models/{corpus[0]}-{kind}"
        workspace = _run([target], opts, _merge(_corpus_overrides(*corpus), overrides), corpus[0])
        if opts["dry_run"]:
            return
        built = workspace / target
        if output is not None:
            shutil.copytree(built, output, dirs_exist_ok=False)
            built = output
        hint(built, _index_folders(workspace, corpus, opts["configfiles"]))
        return
    from ragd_train.config import load_config
    from ragd_train.progress import setup_logging

    _check_overrides(opts, overrides, [])  # a bad flag value names the flag, as in the workflow
    if opts["dry_run"]:
        click.echo(f"would train {kind} on {data}")
        return
    setup_logging()
    config = load_config(opts["configfiles"], overrides or None)
    out = output or _workspace(opts["workspace"]) / "models" / f"{data.stem}-{kind}"
    fit(data, out, config)
    hint(out, [])


def _fit_embeddings(data: Path, out: Path, config: dict[str, Any]) -> None:
    from ragd_train.embeddings.train import EmbeddingTrainingConfig, train_embeddings
    from ragd_train.settings import bind

    train_embeddings(data, out, bind(EmbeddingTrainingConfig, config))


def _index_folders(
    workspace: Path, corpus: tuple[str, str | None, str | None], configfiles: tuple[str, ...]
) -> list[str]:
    """The folders ``ragd index`` must re-read: the snapshot's file folders, else a documents folder."""
    from ragd_train.ragd.config import index_folders

    name, source, path = corpus
    if source is None:
        from ragd_train.config import load_config

        cfg = load_config(configfiles).get("corpora", {}).get(name, {})
        source, path = cfg.get("source"), cfg.get("path")
    # a ragd data dir (source: ragd) is not what ragd indexes: only the snapshot names those files
    return index_folders(workspace / "snapshots" / f"{name}.jsonl", path if source == "documents" else None)


def _print_ragd_hint(model_dir: Path, folders: list[str]) -> None:
    from ragd_train.ragd.config import require_model_dir, switch_message

    click.echo(f"Model ready: {model_dir}")
    click.echo(switch_message(model_dir, require_model_dir(model_dir), folders))


@train.command("reranker")
@corpus_option
@source_option
@path_option
@data_option("(query, positive, negatives) ")
@model_output_option("reranker")
@setting_options("reranker")
@workflow_options
@friendly_errors
def reranker_cmd(
    corpus: str,
    source: str | None,
    path: str | None,
    data: Path | None,
    output: Path | None,
    **options: Any,
) -> None:
    """Fine-tune a reranker (cross-encoder, else ColBERT) into models/<corpus>-reranker."""
    opts, flags = _split(options)
    overrides = _flag_overrides("reranker", flags)
    _train_model(
        "reranker", (corpus, source, path), data, output, overrides, opts, _fit_reranker, _print_reranker_hint
    )


def _fit_reranker(data: Path, out: Path, config: dict[str, Any]) -> None:
    from ragd_train.reranker.train import RerankerTrainingConfig, train_reranker
    from ragd_train.settings import bind

    train_reranker(data, out, bind(RerankerTrainingConfig, config))


def _print_reranker_hint(model_dir: Path, _folders: list[str]) -> None:
    from ragd_train.ragd.hints import ragd_reranker_hint

    click.echo(f"Model ready: {model_dir}")
    click.echo(ragd_reranker_hint(model_dir))


@train.command("llm")
@corpus_option
@source_option
@path_option
@setting_options("llm")
@workflow_options
@friendly_errors
def llm(
    corpus: str,
    source: str | None,
    path: str | None,
    **options: Any,
) -> None:
    """Train a RAFT LoRA adapter for ragd's chat model into models/<corpus>-llm."""
    opts, flags = _split(options)
    overrides = _merge(_corpus_overrides(corpus, source, path), _flag_overrides("llm", flags))
    target = f"models/{corpus}-llm"
    workspace = _run([target], opts, overrides, corpus)
    if opts["dry_run"]:
        return
    from ragd_train.ragd.hints import ragd_llm_hint

    built = workspace / target
    click.echo(f"Adapter ready: {built}")
    click.echo(ragd_llm_hint(built))


@train.command("evaluate")
@click.option(
    "--model",
    "model",
    required=True,
    help="A workspace model name (e.g. demo-embeddings) or any sentence-transformers directory.",
)
@click.option(
    "--test-data",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Held-out JSONL/JSON (query, positive_id, positive) [default: the corpus's test.jsonl].",
)
@click.option("--compare-to", default=None, help="Base model [default: the model's own base].")
@click.option(
    "--snapshot",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Corpus to retrieve from [default: the corpus snapshot, else the test data's texts].",
)
@setting_options("evaluate")
@workflow_options
@friendly_errors
def evaluate_cmd(
    model: str,
    test_data: Path | None,
    compare_to: str | None,
    snapshot: Path | None,
    require_improvement: float | None,
    **opts: Any,
) -> None:
    """A/B-compare a fine-tuned model with its base; exit 1 when it did not improve.

    A workspace model (`demo-embeddings`, `demo-reranker`, `demo-llm`) maps onto its report target.
    """
    from ragd_train.evaluate.report import KINDS, read_report, verdict

    ws = _workspace(opts["workspace"])
    name = Path(model).name
    kind = next((k for k in KINDS if name.endswith(f"-{k}")), None)
    workflow_target = (
        test_data is None
        and compare_to is None
        and snapshot is None
        and kind is not None
        and (Path(model) == Path(name) or Path(model).resolve().parent == (ws / "models").resolve())
    )
    if workflow_target:
        overrides = _flag_overrides("evaluate", {"require_improvement": require_improvement})
        _run([f"reports/{name}.json"], {**opts, "workspace": ws}, overrides, name.rsplit("-", 1)[0])
        if opts["dry_run"]:
            return
        report = read_report(ws / "reports" / f"{name}.json")
        click.echo(f"Report: {ws / 'reports' / (name + '.md')}")
    elif kind in ("reranker", "llm"):
        raise RagdTrainError(
            f"--test-data/--compare-to/--snapshot apply to embedding models; {model} is a {kind}"
        )
    else:
        report = _evaluate_direct(Path(model), test_data, compare_to, snapshot, require_improvement, ws, name)
    message, improved = verdict(report)
    click.echo(message)
    if not improved:
        sys.exit(1)


def _evaluate_direct(
    model: Path,
    test_data: Path | None,
    compare_to: str | None,
    snapshot: Path | None,
    require_improvement: float | None,
    ws: Path,
    name: str,
) -> dict[str, Any]:
    """Evaluate any two sentence-transformers models outside the workflow."""
    from ragd_train.evaluate.embeddings import evaluate_models, write_report
    from ragd_train.metadata import metadata_path, read_metadata
    from ragd_train.progress import setup_logging

    model_dir = model if model.is_dir() else ws / "models" / model
    if not model_dir.is_dir():
        raise RagdTrainError(f"no model directory {model_dir}")
    meta_path = metadata_path(model_dir)
    meta = read_metadata(meta_path, partial=True) if meta_path.exists() else None
    base = compare_to or (meta.base_model if meta else None)
    if base is None:
        raise RagdTrainError(f"{model_dir} has no training_metadata.json: pass --compare-to BASE")
    if test_data is None:
        raise RagdTrainError("pass --test-data (JSONL with query, positive_id, positive)")
    setup_logging()
    report = evaluate_models(
        model_dir, base, test_data, snapshot, require_improvement=require_improvement or 0.0
    )
    out = ws / "reports" / "adhoc" / name
    write_report(report, out.with_suffix(".json"), out.with_suffix(".md"), out.with_suffix(".png"))
    click.echo(f"Report: {out.with_suffix('.md')}")
    return report


workspace_option = click.option(
    "--workspace",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Workspace [default: $RAGD_HOME or ~/.ragd].",
)


def _workspace(path: Path | None) -> Path:
    """The workspace: ``--workspace``, else ``$RAGD_HOME``, else ``~/.ragd``; a one-line error
    when it is not a folder (a file, a symlink loop)."""
    from ragd_train.errors import resolved
    from ragd_train.runner import ragd_home

    given = "--workspace" if path else "$RAGD_HOME" if os.environ.get("RAGD_HOME") else None
    workspace = resolved(path or ragd_home(), field=given)
    if workspace.exists() and not workspace.is_dir():
        raise RagdTrainError(f"the workspace {workspace}{f' ({given})' if given else ''} is not a folder")
    return workspace


@train.command("unlock")
@workspace_option
@click.option("--configfile", "configfiles", multiple=True, type=click.Path(exists=True, dir_okay=False))
@friendly_errors
def unlock_cmd(workspace: Path | None, configfiles: tuple[str, ...]) -> None:
    """Remove the locks a killed run left in the workspace (snakemake --unlock).

    Only when no other `ragd train` or snakemake run is using the workspace.
    """
    from ragd_train.runner import unlock_workspace

    ws = _workspace(workspace)
    unlock_workspace(ws, configfiles)
    click.echo(f"Unlocked {ws}")


@train.command("list")
@workspace_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@friendly_errors
def list_cmd(workspace: Path | None, as_json: bool) -> None:
    """List the models in the workspace."""
    import json

    from ragd_train.management import list_models

    rows = list_models(_workspace(workspace))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("name", "kind", "base", "created", "size", "training data", "headline (vs base)")
    for row in rows:
        for problem in row["problems"]:
            click.echo(f"warning: {problem}; the row shows what could be read", err=True)
        head = row["headline"] or {}
        numbers = all(isinstance(head.get(key), (int, float)) for key in ("finetuned", "delta"))
        metric = (
            f"{head.get('metric', 'ndcg@10')} {head['finetuned']:.3f} ({head['delta']:+.3f})"
            if numbers
            else "-"
        )
        table.add_row(
            row["name"],
            row["kind"],
            str(row["base_model"] or "-"),
            row["created"],
            f"{row['size_bytes'] / 1e6:.1f} MB",
            (row["training_data_sha256"] or "-")[:12],
            metric,
        )
    Console().print(table if rows else "no models in this workspace")


@train.command("delete")
@click.argument("name")
@workspace_option
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@friendly_errors
def delete_cmd(name: str, workspace: Path | None, yes: bool) -> None:
    """Delete one model directory."""
    from ragd_train.management import delete_model, model_path

    ws = _workspace(workspace)
    path = model_path(ws / "models", name)
    if not yes:
        click.confirm(f"Delete {path}?", abort=True)
    delete_model(ws, name)
    click.echo(f"Deleted {path}")


@train.command("export")
@click.argument("name")
@click.option("--to", "dest", required=True, type=click.Path(path_type=Path), help="Archive path or folder.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["tar", "hf", "ollama"]),
    default="tar",
    show_default=True,
    help="tar = tar.gz with metadata, report and checksums; hf = plain Hugging Face directory; "
    "ollama = a LoRA adapter (PEFT layout) + Modelfile for `ollama create`.",
)
@workspace_option
@friendly_errors
def export_cmd(name: str, dest: Path, fmt: str, workspace: Path | None) -> None:
    """Export a model."""
    from ragd_train.management import export_model

    out = export_model(_workspace(workspace), name, dest, fmt)
    click.echo(f"Exported to {out}")
    if fmt == "ollama":
        click.echo(f"Create the Ollama model: cd {out.resolve()} && ollama create {out.name} -f Modelfile")


@train.command("fuse")
@click.argument("name")
@click.option(
    "--to",
    "dest",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Output folder [default: models/<name>-fused in the workspace].",
)
@workspace_option
@friendly_errors
def fuse_cmd(name: str, dest: Path | None, workspace: Path | None) -> None:
    """Merge a LoRA adapter (peft or mlx) into its base model: a plain Hugging Face model."""
    from ragd_train.llm.export import fuse
    from ragd_train.management import model_path
    from ragd_train.progress import setup_logging

    setup_logging()
    ws = _workspace(workspace)
    out = fuse(model_path(ws / "models", name), dest or ws / "models" / f"{name}-fused")
    click.echo(f"Fused model: {out} (loads with transformers' AutoModelForCausalLM)")


@train.group("cache")
def cache_group() -> None:
    """Inspect or prune the content-addressed caches (LLM generations, embeddings)."""


@cache_group.command("stats")
@workspace_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@friendly_errors
def cache_stats_cmd(workspace: Path | None, as_json: bool) -> None:
    """Entries and sizes of the workspace caches."""
    import json

    from ragd_train.cache import cache_stats

    stats = cache_stats(_workspace(workspace) / "cache")
    if as_json:
        click.echo(json.dumps(stats, indent=2))
        return
    gen = stats["generations"]
    click.echo(f"generations: {gen['entries']} entries, {gen['bytes'] / 1e6:.2f} MB")
    for model, entry in stats["embeddings"].items():
        click.echo(
            f"embeddings {model}: {entry['vectors']} vectors in {entry['shards']} shards, "
            f"{entry['bytes'] / 1e6:.2f} MB"
        )


@cache_group.command("prune")
@workspace_option
@friendly_errors
def cache_prune_cmd(workspace: Path | None) -> None:
    """Drop cache entries that no chunk of any current snapshot refers to."""
    from ragd_train.cache import live_hashes, prune, text_hash
    from ragd_train.jsonl_io import read_jsonl

    ws = _workspace(workspace)
    snapshots = sorted((ws / "snapshots").glob("*.jsonl"))
    if not snapshots:
        raise RagdTrainError(f"no snapshots in {ws / 'snapshots'}: nothing tells which entries are live")
    queries = {
        text_hash(q["query"]) for f in (ws / "training_data").glob("*/queries.jsonl") for q in read_jsonl(f)
    }
    removed = prune(ws / "cache", live_hashes(snapshots), queries)
    click.echo(f"removed {removed['generations']} generated entries and {removed['embeddings']} embeddings")


@train.command("use")
@click.argument("model")
@workspace_option
@friendly_errors
def use_cmd(model: str, workspace: Path | None) -> None:
    """Switch ragd to a fine-tuned embedding model (embedding.model and embedding.dimension).

    Writes ragd's ~/.ragd/config.yaml through ragd's own config model when ragd is installed,
    then prints the ragd commands that re-embed the index with the model.
    """
    from ragd_train.ragd.config import read_ragd_settings, require_model_dir, set_values

    model_dir = Path(model).expanduser()
    if not model_dir.is_dir():
        model_dir = _workspace(workspace) / "models" / model
    if not model_dir.is_dir():
        raise RagdTrainError(f"no model directory {model} (nor {model_dir})")
    model_dir = model_dir.resolve()
    dimension = require_model_dir(model_dir)
    from ragd_train.weights import verify_weights

    verify_weights(model_dir)  # never switch ragd to a truncated or diverged model
    before = int(read_ragd_settings()["embedding.dimension"])
    path = set_values({"embedding.model": str(model_dir), "embedding.dimension": dimension})
    click.echo(f"{path}: embedding.model = {model_dir}, embedding.dimension = {dimension}")
    if before != dimension:
        chroma = Path.home() / ".ragd" / "chroma"
        click.echo(
            f"The dimension changed ({before} -> {dimension}): move the old index aside first: "
            f"mv {chroma} {chroma}.dim{before}"
        )
    click.echo("Re-embed the index with it: ragd index <each folder you indexed> --overwrite")


@train.command("snapshot")
@corpus_option
@source_option
@path_option
@click.option("--workspace", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option("--configfile", "configfiles", multiple=True, type=click.Path(exists=True, dir_okay=False))
@friendly_errors
def snapshot(
    corpus: str, source: str | None, path: str | None, workspace: Path | None, configfiles: tuple[str, ...]
) -> None:
    """Re-read a corpus into snapshots/<corpus>.jsonl (rewritten only when its content changed)."""
    import os

    from ragd_train.config import load_config, resolve_corpus, workflow_dir
    from ragd_train.snapshot import sync_snapshot

    config = load_config(configfiles, _corpus_overrides(corpus, source, path) or None)
    if corpus not in config["corpora"]:
        raise RagdTrainError(unknown_corpus(corpus, config))
    ws = _workspace(workspace)
    ws.mkdir(parents=True, exist_ok=True)
    cfg = resolve_corpus(config["corpora"][corpus], [workflow_dir()])
    os.chdir(ws)
    out, changed = sync_snapshot(corpus, cfg, "snapshots")
    click.echo(f"{ws / out}: {'updated' if changed else 'unchanged'}")


if __name__ == "__main__":  # pragma: no cover
    main()
