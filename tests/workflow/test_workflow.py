"""Real Snakemake runs of the workflow on a small slice of the demo corpus with a tiny model."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import ROOT, cfgargs, snakemake

pytestmark = pytest.mark.slow


@pytest.fixture
def workspace(tmp_path: Path, tiny_model: Path) -> tuple[Path, Path]:
    """A workspace and a config file: 5 demo documents, the tiny model, one quick epoch."""
    config = {
        "corpora": {"demo": {"limit": 5}},
        "generate": {"queries_per_chunk": 1},
        "embeddings": {"base_model": str(tiny_model), "epochs": 1, "batch_size": 8, "matryoshka_dims": [16]},
        "mining": {"model": str(tiny_model)},
    }
    cfg = tmp_path / "test.yaml"
    cfg.write_text(yaml.safe_dump(config))
    return tmp_path / "ws", cfg


def test_demo_embeddings_target_builds_and_is_incremental(workspace: tuple[Path, Path]) -> None:
    from sentence_transformers import SentenceTransformer

    ws, cfg = workspace
    first = snakemake(ws, *cfgargs(cfg), "--", "reports/demo-embeddings.json")
    assert first.returncode == 0, first.stderr[-3000:]
    report = json.loads((ws / "reports" / "demo-embeddings.json").read_text())
    assert report["gate"]["verdict"] in ("promoted", "rejected") and report["dims"] == [32, 16]
    assert (ws / "reports" / "demo-embeddings.png").stat().st_size > 1000
    model_dir = ws / "models" / "demo-embeddings"
    model = SentenceTransformer(str(model_dir))
    assert model.encode(["backup schedule"]).shape == (1, 32)
    meta = json.loads((model_dir / "training_metadata.json").read_text())
    snap = ws / "snapshots" / "demo.jsonl"
    assert meta["inputs"]["snapshot"]["path"].endswith("snapshots/demo.jsonl")
    import hashlib

    assert meta["inputs"]["snapshot"]["sha256"] == hashlib.sha256(snap.read_bytes()).hexdigest()
    assert meta["config"]["epochs"] == 1 and meta["matryoshka_dims"] == [32, 16]
    for rule in ("generate_queries", "build_training_data", "train_embeddings", "evaluate_embeddings"):
        assert (ws / "logs" / rule / "demo.log").stat().st_size > 0, rule
        assert (ws / "benchmarks" / rule / "demo.tsv").exists(), rule
    assert "step 1/" in (ws / "logs" / "train_embeddings" / "demo.log").read_text()

    second = snakemake(ws, *cfgargs(cfg), "--", "reports/demo-embeddings.json")
    assert second.returncode == 0 and "Nothing to be done" in second.stdout + second.stderr

    # A training hyperparameter changes: only the model rebuilds.
    data = yaml.safe_load(cfg.read_text())
    data["embeddings"]["learning_rate"] = 1e-4
    cfg.write_text(yaml.safe_dump(data))
    dry = snakemake(ws, *cfgargs(cfg), "-n", "--", "models/demo-embeddings")
    out = dry.stdout + dry.stderr
    assert dry.returncode == 0 and "train_embeddings" in out
    assert "rule generate_queries" not in out and "rule build_training_data" not in out

    # Each rule's params are the settings it reads (ragd_train/settings.py): a change reruns
    # exactly the rules that read it, as Snakemake's own params check sees it.
    def params_changed(section: str = "", key: str = "", value: object = None) -> set[str]:
        """The rules whose params differ from the last run's after setting section.key."""
        changed = yaml.safe_load(cfg.read_text())
        changed["embeddings"].pop("learning_rate")  # back to what was built
        if section:
            changed.setdefault(section, {})[key] = value
        other = cfg.with_name("changed.yaml")
        other.write_text(yaml.safe_dump(changed))
        dry = snakemake(
            ws, *cfgargs(other), "-n", "--rerun-triggers", "params", "--", "reports/demo-embeddings.json"
        )
        assert dry.returncode == 0, dry.stderr[-2000:]
        jobs = re.findall(r"^rule (\w+):\n(.*?)(?=^rule |\Z)", dry.stdout + dry.stderr, re.S | re.M)
        return {rule for rule, body in jobs if "Params have changed" in body}

    assert params_changed() == set()
    assert params_changed("generate", "queries_per_chunk", 3) == {"generate_queries"}
    assert params_changed("mining", "candidates", 7) == {"build_training_data"}
    assert params_changed("embeddings", "learning_rate", 3e-4) == {"train_embeddings"}
    assert params_changed("evaluation", "mode", "dense") == {"evaluate_embeddings"}
    assert params_changed("evaluation", "llm_max_examples", 3) == set()  # only the LLM report reads it
    assert params_changed("reranker", "epochs", 3) == set()

    # Re-indexing with no content change touches nothing downstream.
    (ws / "extra").mkdir()
    mtime = snap.stat().st_mtime_ns
    dry = snakemake(ws, *cfgargs(cfg), "-n", "--", "training_data/demo/train.jsonl")
    assert "Nothing to be done" in dry.stdout + dry.stderr and snap.stat().st_mtime_ns == mtime


def test_killed_training_leaves_no_model_and_rerun_trains(workspace: tuple[Path, Path]) -> None:
    ws, cfg = workspace
    data = yaml.safe_load(cfg.read_text())
    data["embeddings"]["epochs"] = 500  # long enough to be killed mid-training
    cfg.write_text(yaml.safe_dump(data))
    prep = snakemake(ws, *cfgargs(cfg), "--", "training_data/demo/train.jsonl")
    assert prep.returncode == 0, prep.stderr[-3000:]
    log = ws / "logs" / "train_embeddings" / "demo.log"
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(ROOT / "Snakefile"),
        "--directory",
        str(ws),
        "--cores",
        "2",
        *cfgargs(cfg),
        "--",
        "models/demo-embeddings",
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (log.exists() and "step 3/" in log.read_text()):
        time.sleep(0.5)
    assert log.exists() and "step 3/" in log.read_text(), "training never started"
    os.killpg(proc.pid, signal.SIGKILL)  # the hardest kill: no cleanup handlers run
    proc.wait(timeout=60)
    assert not (ws / "models" / "demo-embeddings").exists()

    data["embeddings"]["epochs"] = 1
    cfg.write_text(yaml.safe_dump(data))
    rerun = snakemake(ws, *cfgargs(cfg), "--unlock")
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    rerun = snakemake(ws, *cfgargs(cfg), "--", "models/demo-embeddings")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert (ws / "models" / "demo-embeddings" / "model.safetensors").exists()
    assert not list((ws / "models").glob(".*.tmp")), "stale staging directory kept"


def test_bad_config_value_stops_with_one_line(workspace: tuple[Path, Path]) -> None:
    ws, cfg = workspace
    cfg.write_text(cfg.read_text() + "seed: -x\n")
    result = snakemake(ws, *cfgargs(cfg), "-n")
    assert result.returncode != 0
    assert f"{cfg}:" in result.stderr and "field 'seed'" in result.stderr


def test_lint_is_clean() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--lint"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
