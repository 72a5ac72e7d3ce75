"""A refused, dry or failed run changes nothing (issue #18): real Snakemake runs with a tiny model."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from conftest import DEMO
from helpers import ROOT, cfgargs, snakemake

from ragd_train.cli import main

pytestmark = pytest.mark.slow
MODEL = "models/demo-embeddings"


def write_config(path: Path, docs: Path, tiny_model: Path, **embeddings: object) -> Path:
    config = {
        "corpora": {"demo": {"source": "documents", "path": str(docs), "limit": 4}},
        "generate": {"queries_per_chunk": 1},
        "embeddings": {
            "base_model": str(tiny_model),
            "epochs": 1,
            "batch_size": 8,
            "matryoshka_dims": [16],
            **embeddings,
        },
        "mining": {"model": str(tiny_model)},
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    """A workspace with training data and a trained models/demo-embeddings (built once)."""
    root = tmp_path_factory.mktemp("built")
    docs = root / "docs"
    docs.mkdir()
    for doc in sorted(DEMO.glob("*.md"))[:4]:
        shutil.copy(doc, docs / doc.name)
    cfg = write_config(root / "test.yaml", docs, tiny_model)
    done = snakemake(root / "ws", *cfgargs(cfg), "--", MODEL)
    assert done.returncode == 0, done.stderr[-3000:]
    return root


@pytest.fixture
def ws(built: Path, tmp_path: Path) -> Path:
    """A copy of the built workspace (mtimes and Snakemake metadata kept) and of its documents."""
    shutil.copytree(built / "ws", tmp_path / "ws", symlinks=True)
    shutil.copytree(built / "docs", tmp_path / "docs")
    return tmp_path / "ws"


def config(ws: Path, tiny_model: Path, **embeddings: object) -> Path:
    return write_config(ws.parent / "test.yaml", ws.parent / "docs", tiny_model, **embeddings)


def digest(folder: Path) -> dict[str, str]:
    return {
        str(f.relative_to(folder)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(folder.rglob("*"))
        if f.is_file() and f.name != ".snakemake_timestamp"
    }


def hidden_dirs(ws: Path) -> list[str]:
    return sorted(p.name for p in (ws / "models").iterdir() if p.name.startswith("."))


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ------------------------------------------------------------------ 1. the last good model survives


@pytest.mark.parametrize(
    ("embeddings", "field"),
    [
        ({"base_model": "sentence-transformers/all-MiniLM-L6-v3"}, "embeddings.base_model"),
        ({"matryoshka_dims": [1024]}, "embeddings.matryoshka_dims"),
    ],
)
def test_a_bad_embedding_config_is_refused_before_the_model_is_touched(
    ws: Path, tiny_model: Path, embeddings: dict, field: str
) -> None:
    before = digest(ws / MODEL)
    cfg = config(ws, tiny_model, **embeddings)
    result = snakemake(ws, *cfgargs(cfg), "--", MODEL)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and field in errors[0], result.stderr[-2000:]
    assert errors[0].startswith(f"Error: {cfg}:"), "the error names the file (and line) that set it"
    assert digest(ws / MODEL) == before
    assert hidden_dirs(ws) == [] and not list((ws / ".snakemake" / "locks").glob("*"))


def test_a_failed_rebuild_keeps_the_last_good_model(ws: Path, tiny_model: Path) -> None:
    before = digest(ws / MODEL)
    cfg = config(ws, tiny_model)
    train = ws / "training_data" / "demo" / "train.jsonl"
    train.write_text(train.read_text() + "{not json\n")  # newer input: the model rebuilds, and fails
    result = snakemake(ws, *cfgargs(cfg), "--", MODEL)
    assert result.returncode != 0 and "train_embeddings" in result.stderr
    assert digest(ws / MODEL) == before, "the last good model was not kept"
    assert hidden_dirs(ws) == []
    assert "Kept the last good models/demo-embeddings" in result.stderr
    dry = snakemake(ws, *cfgargs(cfg), "-n", "--", MODEL)
    assert "train_embeddings" in dry.stdout + dry.stderr, "the kept model must still be out of date"


def test_a_failed_rebuild_of_the_training_data_keeps_the_previous_files(ws: Path, tiny_model: Path) -> None:
    """A failed build_training_data (there: a truncated embedding shard raising BadZipFile) made
    Snakemake delete the previous train/test/stats files (#28 item 5); they are put back."""
    data = ws / "training_data" / "demo"
    before = {name: (data / name).read_bytes() for name in ("train.jsonl", "test.jsonl", "stats.json")}
    cfg = config(ws, tiny_model)
    queries = data / "queries.jsonl"
    queries.write_text(queries.read_text() + "{not json\n")  # newer input: the rebuild runs, and fails
    result = snakemake(ws, *cfgargs(cfg), "--", "training_data/demo/train.jsonl")
    assert result.returncode != 0 and "build_training_data" in result.stderr
    assert {name: (data / name).read_bytes() for name in before} == before
    assert "Kept the last good training_data/demo/train.jsonl" in result.stderr
    assert not [p.name for p in data.iterdir() if p.name.startswith(".")]
    dry = snakemake(ws, *cfgargs(cfg), "-n", "--", "training_data/demo/train.jsonl")
    assert "build_training_data" in dry.stdout + dry.stderr, "the kept files must still be out of date"


# ------------------------------------------------------------------ 2. stale staging directories


def test_stale_staging_directories_are_removed_at_the_start_of_any_run(ws: Path, tiny_model: Path) -> None:
    cfg = config(ws, tiny_model)
    host = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:64]  # as staging names it
    dead = ws / "models" / f".demo-reranker.pid{dead_pid()}@{host}.k1ll3d.tmp"
    alive = ws / "models" / f".demo-llm.pid{os.getpid()}@{host}.runn1n.tmp"
    elsewhere = ws / "models" / f".demo-llm.pid{dead_pid()}@other-host.runn1n.tmp"
    for folder in (dead, alive, elsewhere):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"x" * 1000)
    result = snakemake(ws, *cfgargs(cfg), "--forcerun", "sync_snapshot", "--", "snapshots/demo.jsonl")
    assert result.returncode == 0, result.stderr[-2000:]
    assert not dead.exists(), "a dead run's staging directory was kept"
    assert alive.exists() and elsewhere.exists(), "a staging directory in use (or unknown) was removed"


def test_sigterm_removes_the_staging_directory(tmp_path: Path) -> None:
    code = (
        "import sys, time\n"
        "from ragd_train.staging import staged_output\n"
        f"with staged_output({str(tmp_path / 'model')!r}) as staging:\n"
        "    (staging / 'half.bin').write_bytes(b'x')\n"
        "    print('ready', flush=True)\n"
        "    time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ 3. Ctrl-C and locks of `ragd train`


def ragd_command(ws: Path, cfg: Path, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "ragd_train.cli",
        "train",
        *args,
        "--workspace",
        str(ws),
        "--configfile",
        str(cfg),
    ]


def test_ctrl_c_on_ragd_train_leaves_no_lock_and_keeps_the_model(ws: Path, tiny_model: Path) -> None:
    before = digest(ws / MODEL)
    cfg = config(ws, tiny_model, epochs=500)  # a changed parameter: the model rebuilds
    log = ws / "logs" / "train_embeddings" / "demo.log"
    log.unlink()
    # Its own session, as a shell's foreground job: Ctrl-C is SIGINT to this whole process group.
    cli = subprocess.Popen(
        [*ragd_command(ws, cfg, "embeddings", "--cores", "2")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        cwd=ROOT,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (log.exists() and "step 3/" in log.read_text()):
        time.sleep(0.5)
    assert log.exists() and "step 3/" in log.read_text(), "training never started"
    os.killpg(cli.pid, signal.SIGINT)
    _out, err = cli.communicate(timeout=180)
    assert cli.returncode == 1 and "Error: interrupted building models/demo-embeddings" in err, err[-3000:]
    assert not list((ws / ".snakemake" / "locks").glob("*")), "Ctrl-C left .snakemake/locks"
    size = log.stat().st_size
    time.sleep(3)
    assert log.stat().st_size == size, "the rule script kept running after snakemake ended"
    assert hidden_dirs(ws) == [] and digest(ws / MODEL) == before
    dry = subprocess.run(ragd_command(ws, cfg, "embeddings", "-n"), capture_output=True, text=True, cwd=ROOT)
    assert dry.returncode == 0, dry.stderr[-2000:]


def test_a_locked_workspace_names_the_unlock_command(ws: Path, tiny_model: Path) -> None:
    cfg = config(ws, tiny_model, epochs=2)
    locks = ws / ".snakemake" / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    (locks / "0.output.lock").write_text(f"{MODEL}\n")  # what a killed run leaves
    runner = CliRunner()
    args = ["train", "embeddings", "--workspace", str(ws), "--configfile", str(cfg)]
    result = runner.invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("Error: the workspace") and f"ragd train unlock --workspace {ws}" in line
    unlocked = runner.invoke(main, ["train", "unlock", "--workspace", str(ws), "--configfile", str(cfg)])
    assert unlocked.exit_code == 0, unlocked.output
    assert not list(locks.glob("*"))


def test_an_output_a_killed_run_left_marked_incomplete_is_rebuilt_by_ragd_train(
    ws: Path, tiny_model: Path
) -> None:
    """SIGKILL after a job moved its output into place, before Snakemake recorded that the job
    finished: the output stays marked incomplete (as the soak test found), and plain Snakemake
    refuses to start. `ragd train` rebuilds it."""
    from base64 import urlsafe_b64encode

    cfg = config(ws, tiny_model)  # unchanged settings: nothing else would rebuild the model
    marker = ws / ".snakemake" / "incomplete" / urlsafe_b64encode(MODEL.encode()).decode()
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text('{"external_jobid": null}')  # as Snakemake writes it when the job starts
    plain = snakemake(ws, *cfgargs(cfg), "-n", "--", MODEL)
    assert plain.returncode != 0 and "IncompleteFilesException" in plain.stdout + plain.stderr

    command = ragd_command(ws, cfg, "embeddings", "--cores", "2")
    dry = subprocess.run([*command, "-n"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert dry.returncode == 0 and "train_embeddings" in dry.stdout + dry.stderr, dry.stderr[-2000:]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not marker.exists() and hidden_dirs(ws) == []
    from sentence_transformers import SentenceTransformer

    assert SentenceTransformer(str(ws / MODEL)).encode(["backup schedule"]).shape == (1, 32)
    again = snakemake(ws, *cfgargs(cfg), "-n", "--", MODEL)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr


# ------------------------------------------------------------------ 4. the snapshot of a refused or dry run


def test_a_refused_or_dry_run_does_not_write_the_snapshot(ws: Path, tiny_model: Path) -> None:
    cfg = config(ws, tiny_model)
    snap = ws / "snapshots" / "demo.jsonl"
    state = (snap.read_bytes(), snap.stat().st_mtime_ns)
    doc = sorted((ws.parent / "docs").glob("*.md"))[0]
    doc.write_text(doc.read_text() + "\n\nA new paragraph about quarterly audits.\n")  # re-indexed

    dry = snakemake(ws, *cfgargs(cfg), "-n", "--", "training_data/demo/train.jsonl")
    assert dry.returncode == 0 and "sync_snapshot" in dry.stdout + dry.stderr
    assert "generate_queries" in dry.stdout + dry.stderr
    assert (snap.read_bytes(), snap.stat().st_mtime_ns) == state, "a dry run wrote the snapshot"

    locks = ws / ".snakemake" / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    (locks / "0.input.lock").write_text("snapshots/demo.jsonl\n")  # another run reads the snapshot
    refused = snakemake(ws, *cfgargs(cfg), "--", "training_data/demo/train.jsonl")
    assert refused.returncode != 0 and "LockException" in refused.stderr
    assert (snap.read_bytes(), snap.stat().st_mtime_ns) == state, "a run refused by the lock wrote it"

    shutil.rmtree(locks)
    run = snakemake(ws, *cfgargs(cfg), "--", "snapshots/demo.jsonl")
    assert run.returncode == 0, run.stderr[-2000:]
    assert b"quarterly audits" in snap.read_bytes()
    again = snakemake(ws, *cfgargs(cfg), "-n", "--", "snapshots/demo.jsonl")
    assert "Nothing to be done" in again.stdout + again.stderr


# ------------------------------------------------------------------ soak: interrupted and concurrent runs


SOAK_ROUNDS = 20
SOAK_SECONDS = 480


def assert_consistent(ws: Path) -> None:
    """What any mix of interrupted and concurrent runs must leave: no locks, a loadable snapshot,
    complete models, and every cache entry and training file readable."""
    import json

    import numpy as np

    from ragd_train.jsonl_io import read_jsonl
    from ragd_train.snapshot import load_snapshot

    assert not list((ws / ".snakemake" / "locks").glob("*")), "a lock was left behind"
    load_snapshot(ws / "snapshots" / "demo.jsonl")
    model = ws / MODEL
    if model.exists():
        assert (model / "model.safetensors").stat().st_size > 0
        json.loads((model / "training_metadata.json").read_text())
    for path in sorted((ws / "cache").rglob("*")):
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".npz":
            with np.load(path) as shard:
                assert all(shard[k].size >= 0 for k in shard.files)
    for path in sorted((ws / "training_data").rglob("*.jsonl")):
        read_jsonl(path)


def test_soak_interrupted_and_concurrent_runs_leave_the_workspace_consistent(
    ws: Path, tiny_model: Path
) -> None:
    """Rounds of Ctrl-C at a random moment, two runs at once, and SIGKILL of the whole run (then
    `ragd train unlock`), each with a changed setting so that the model really rebuilds."""
    import random

    rng = random.Random(18)
    start, rounds = time.monotonic(), 0
    while rounds < SOAK_ROUNDS and time.monotonic() - start < SOAK_SECONDS:
        cfg = config(ws, tiny_model, learning_rate=1e-4 * (rounds + 1), epochs=3)
        command = ragd_command(ws, cfg, "embeddings", "--cores", "2")
        kind = rounds % 3
        if kind == 1:  # two at once: each finishes or is refused by the lock, naming the unlock
            runs = [
                subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
                for _ in range(2)
            ]
            for run in runs:
                _out, err = run.communicate(timeout=300)
                assert run.returncode == 0 or "locked" in err or "written by another run" in err, err[-2000:]
        else:  # interrupted: Ctrl-C to the CLI's group, or SIGKILL of everything
            run = subprocess.Popen(
                command,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=ROOT,
                start_new_session=True,
            )
            time.sleep(rng.uniform(0.5, 10.0))
            if kind == 0:
                os.killpg(run.pid, signal.SIGINT)
            else:  # the CLI, snakemake (its own session) and the rule scripts, all at once
                import psutil

                for proc in [psutil.Process(run.pid), *psutil.Process(run.pid).children(recursive=True)]:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        proc.kill()
            run.communicate(timeout=300)
            if kind == 2:
                unlock = subprocess.run(
                    ragd_command(ws, cfg, "unlock"), capture_output=True, text=True, cwd=ROOT, timeout=120
                )
                assert unlock.returncode == 0, unlock.stderr[-2000:]
        assert_consistent(ws)
        rounds += 1
    assert rounds >= 6, f"only {rounds} rounds in {SOAK_SECONDS} s"
    cfg = config(ws, tiny_model)
    final = subprocess.run(
        ragd_command(ws, cfg, "embeddings", "--cores", "2"),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert final.returncode == 0, final.stderr[-3000:]
    assert_consistent(ws)
    assert hidden_dirs(ws) == [], "staging or backup directories were left behind"
    from sentence_transformers import SentenceTransformer

    assert SentenceTransformer(str(ws / MODEL)).encode(["backup schedule"]).shape == (1, 32)
