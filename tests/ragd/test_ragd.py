"""ragd-train beside the real ragd 1.0.10: its commands intact, `ragd train` added, a round trip.

ragd is installed from its source (``$RAGD_SOURCE``, else ``../shared/ragd``); `.ci/run` installs it
into the venv and sets ``RAGD_TRAIN_REQUIRE_RAGD=1``, so there a missing ragd fails instead of skipping.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
REQUIRE = os.environ.get("RAGD_TRAIN_REQUIRE_RAGD") == "1"


def ragd_source() -> Path | None:
    for candidate in (os.environ.get("RAGD_SOURCE"), ROOT.parent / "shared" / "ragd", "/work/shared/ragd"):
        if candidate and (Path(candidate) / "pyproject.toml").is_file():
            return Path(candidate).resolve()
    return None


def need_ragd() -> None:
    try:  # not ragd.cli: importing it creates ~/.ragd/logs in the real HOME
        import ragd.config  # noqa: F401
    except ImportError as exc:
        if REQUIRE:
            pytest.fail(f"RAGD_TRAIN_REQUIRE_RAGD=1 but ragd does not import ({exc})")
        pytest.skip("ragd is not installed")


def pip_prefix(prefix: Path, *specs: str) -> None:
    """A real `pip install` of ``specs`` into ``prefix`` (scripts in prefix/bin), no dependencies."""
    # --ignore-installed: without it pip uninstalls the venv's own copies while installing to a prefix
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "-q",
        "--no-deps",
        "--no-build-isolation",
        "--ignore-installed",
    ]
    cmd += ["--ignore-requires-python", "--prefix", str(prefix), *specs]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]


def prefix_env(prefix: Path, home: Path) -> dict[str, str]:
    site = sysconfig.get_path("purelib", vars={"base": str(prefix), "platbase": str(prefix)})
    return {**os.environ, "PYTHONPATH": site, "HOME": str(home), "HF_HUB_OFFLINE": "1"}


def run(cmd: list[str], env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, check=False)


@pytest.mark.slow
@pytest.mark.parametrize("order", ["ragd-first", "ragd-train-first"])
def test_install_order_decides_who_owns_the_ragd_executable(order: str, tmp_path: Path) -> None:
    """Installed after ragd, our `ragd` is ragd's own app plus `train`; installed before, ragd's wins."""
    need_ragd()
    source = ragd_source()
    assert source is not None, "no ragd source: set RAGD_SOURCE"
    prefix = tmp_path / "prefix"
    import shutil

    # pip builds in the source tree (build/, *.egg-info): build from copies, never in a checkout
    ours, theirs = tmp_path / "ragd-train-src", tmp_path / "ragd-src"
    for src, dst, keep in ((ROOT, ours, ("ragd_train",)), (source, theirs, ("src",))):
        dst.mkdir()
        for name in (*keep, "pyproject.toml", "README.md", "LICENSE"):
            if (src / name).is_dir():
                shutil.copytree(src / name, dst / name, ignore=shutil.ignore_patterns("__pycache__"))
            elif (src / name).is_file():
                shutil.copy(src / name, dst / name)
    specs = [str(theirs), str(ours)] if order == "ragd-first" else [str(ours), str(theirs)]
    for spec in specs:  # two pip runs: the second one's `ragd` script replaces the first one's
        pip_prefix(prefix, spec)
    env = prefix_env(prefix, tmp_path)
    ragd_exe = str(prefix / "bin" / "ragd")
    # ragd's own app, whatever the scripts are, under the same program name
    reference = [sys.executable, "-c", "from ragd.cli import app; app(prog_name='ragd')"]
    for args in (["--version"], ["--help"], ["search", "--help"], ["index", "--help"]):
        ours, theirs = run([ragd_exe, *args], env), run([*reference, *args], env)
        assert ours.returncode == theirs.returncode == 0, ours.stderr[-2000:]
        if args == ["--help"] and order == "ragd-first":
            # ragd's help, panels and all, plus one row for train in its own panel
            assert "Fine-tuning (ragd-train)" in ours.stdout and "train" in ours.stdout
            for line in theirs.stdout.splitlines():
                assert line in ours.stdout
        else:
            assert ours.stdout == theirs.stdout
    assert run([ragd_exe, "--version"], env).stdout.strip() == "ragd version 1.0.10"
    train = run([ragd_exe, "train", "--help"], env)
    standalone = run([str(prefix / "bin" / "ragd-train"), "--help"], env)
    assert standalone.returncode == 0 and "embeddings" in standalone.stdout
    if order == "ragd-first":
        assert train.returncode == 0 and "Usage: ragd train" in train.stdout and "embeddings" in train.stdout
    else:
        assert train.returncode != 0 and "No such command 'train'" in train.stdout + train.stderr


@pytest.mark.slow
def test_without_ragd_the_executable_offers_train_and_says_so(tmp_path: Path) -> None:
    """With no ragd importable, `ragd` is ours alone and says that ragd is not installed."""
    code = (
        "import sys; sys.modules['ragd'] = None; sys.modules['ragd.cli'] = None\n"
        "from ragd_train.ragd.app import main; sys.argv = ['ragd', *sys.argv[1:]]; main()"
    )
    help_ = run([sys.executable, "-c", code, "--help"], {**os.environ, "HOME": str(tmp_path)})
    version = run([sys.executable, "-c", code, "--version"], {**os.environ, "HOME": str(tmp_path)})
    assert help_.returncode == 0 and "ragd is not installed here" in help_.stdout and "train" in help_.stdout
    assert "search" not in help_.stdout
    assert "(ragd is not installed)" in version.stdout


def test_finetuned_embedder_has_everything_ragds_code_calls(tiny_model: Path) -> None:
    """FineTunedEmbedder offers every public method of ragd's own SentenceTransformerEmbedder."""
    need_ragd()
    from ragd.embedding.embedder import Embedder, SentenceTransformerEmbedder

    from ragd_train.ragd.embedder import FineTunedEmbedder

    ours = FineTunedEmbedder(tiny_model)
    public = {n for n in dir(SentenceTransformerEmbedder) if not n.startswith("_") and not n.isupper()}
    protocol = {n for n in dir(Embedder) if not n.startswith("_")}
    assert protocol <= public and public <= set(dir(ours))
    theirs = SentenceTransformerEmbedder(model_name=str(tiny_model), device="cpu")
    assert ours.dimension == theirs.dimension == 32
    import numpy as np

    text = "How often do backups run?"
    assert np.allclose(ours.embed_single(text), theirs.embed_single(text), atol=1e-5)
    assert np.allclose(ours.embed([text, "x"]), theirs.embed([text, "x"]), atol=1e-5)
    assert ours.embed([]) == theirs.embed([]) == []


def test_raft_prompts_are_ragds_own() -> None:
    """RAFT examples carry ragd's own "answer" prompt and its context layout, whatever its version."""
    need_ragd()
    from ragd.chat.context import ContextWindow, RetrievedContext
    from ragd.chat.prompts import get_prompt_template

    from ragd_train.ragd.prompts import Source, format_context, prompt_source, system_prompt, user_message

    template = get_prompt_template("answer")
    assert system_prompt() == template.system_prompt and prompt_source().startswith("ragd 1.0.10")
    assert user_message("CTX", "Q?") == template.format(context="CTX", question="Q?")[1]
    sources = [
        Source("a_chunk_0", "a", "a.md", "Backups run every four hours.", "oracle", "oracle"),
        Source("b_chunk_0", "b", "b.md", "Tokens expire after 30 days.", "distractor", "mined"),
        Source("a_chunk_1", "a", "a.md", "Restores take minutes.", "distractor", "mined"),
    ]
    window = ContextWindow(max_tokens=10_000)
    for s in sources:
        window.add_context(
            RetrievedContext(content=s.text, source=s.filename, score=1.0, document_id=s.document_id)
        )
    assert format_context(sources)[0] == window.format_context()


def fingerprint(folder: Path) -> dict[str, tuple[int, int, str]]:
    """Size, mtime and sha256 of every file under ``folder``."""
    import hashlib

    return {
        str(f.relative_to(folder)): (
            f.stat().st_size,
            f.stat().st_mtime_ns,
            hashlib.sha256(f.read_bytes()).hexdigest(),
        )
        for f in sorted(folder.rglob("*"))
        if f.is_file()
    }


def stored_vectors(chroma: Path, tmp: Path) -> dict[str, tuple[str, list[float]]]:
    """Every chunk ragd stored: id -> (text, vector), read from a copy (Chroma writes where it opens)."""
    import shutil

    import chromadb

    copy = tmp / f"chroma-copy-{len(list(tmp.glob('chroma-copy-*')))}"
    shutil.copytree(chroma, copy)
    got = (
        chromadb.PersistentClient(path=str(copy))
        .get_collection("ragd_documents")
        .get(include=["documents", "embeddings"])
    )
    return {i: (d, list(e)) for i, d, e in zip(got["ids"], got["documents"], got["embeddings"], strict=True)}


@pytest.mark.slow
def test_round_trip_through_ragds_own_index_training_switch_and_search(tmp_path: Path) -> None:
    """ragd indexes; `ragd train embeddings --source ragd` trains from that index without touching it;
    the printed ragd commands, run literally, switch ragd and re-embed; ragd's search then serves
    vectors that are the fine-tuned model's own encodings."""
    need_ragd()
    import shutil

    import numpy as np
    from ragd_home import prepare_ragd_home
    from sentence_transformers import SentenceTransformer

    from ragd_train.hub import resolve_model

    home = tmp_path / "home"
    env = prepare_ragd_home(home)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")  # `ragd` and `ragd-train` as a user has them
    docs = tmp_path / "docs"
    shutil.copytree(ROOT / "data" / "demo", docs)

    def sh(line: str, timeout: int = 900) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            line, shell=True, capture_output=True, text=True, env=env, timeout=timeout, check=False
        )
        assert done.returncode == 0, f"{line}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done

    sh(f"ragd index {shlex.quote(str(docs))}")
    chroma = home / ".ragd" / "chroma"
    before = fingerprint(chroma)
    base_vectors = stored_vectors(chroma, tmp_path)
    assert len(base_vectors) >= 40

    quick = tmp_path / "quick.yaml"
    quick.write_text(
        yaml.safe_dump(
            {
                "generate": {"query_generator": "nollm", "queries_per_chunk": 1},
                # ship the weights as trained: this test follows them into ragd's index (the dev
                # split's choice, which may keep the base on so small a corpus, is tested elsewhere)
                "embeddings": {"epochs": 1, "batch_size": 16, "interpolation": [1.0]},
            }
        )
    )
    ws = tmp_path / "ws"
    args = (
        f"--corpus demo --source ragd --path {home / '.ragd'} --workspace {ws} --configfile {quick} --cores 2"
    )
    sh(f"ragd train embeddings {args} --dry-run")
    assert fingerprint(chroma) == before, "a dry run changed ragd's index"
    trained = sh(f"ragd train embeddings {args}", timeout=1800)
    assert fingerprint(chroma) == before, "reading ragd's index wrote to it"
    snapshot = [json.loads(line) for line in (ws / "snapshots" / "demo.jsonl").read_text().splitlines()]
    assert {c["chunk_id"] for c in snapshot} == set(base_vectors)  # ragd's own chunks and ids

    lines = trained.stdout.splitlines()
    # the rule prints the switch too (for plain `snakemake` users); the CLI's block comes last
    start = max(i for i, line in enumerate(lines) if line.startswith("Switch ragd to this model"))
    commands = [line.strip() for line in lines[start + 1 :] if line.startswith("  ragd")]
    model_dir = ws / "models" / "demo-embeddings"
    assert commands == [
        f"ragd models set --embedding {model_dir.resolve()} --no-validate",
        f"ragd index {docs.resolve()} --overwrite",
    ]
    for command in commands:
        sh(command)

    found = json.loads(
        sh("ragd search 'how often do backups run' --format json --no-interactive --min-score 0").stdout
    )
    assert found["count"] > 0
    tuned = SentenceTransformer(str(model_dir), device="cpu")
    base = SentenceTransformer(resolve_model("sentence-transformers/all-MiniLM-L6-v2"), device="cpu")
    after = stored_vectors(chroma, tmp_path)
    assert set(after) == set(base_vectors)
    for hit in found["results"][:3]:
        chunk_id, (text, vector) = next((i, tv) for i, tv in after.items() if tv[0] == hit["content"])
        mine = tuned.encode(text)
        assert np.allclose(vector, mine, atol=1e-4), f"{chunk_id}: not the fine-tuned model's vector"
        assert not np.allclose(vector, base.encode(text), atol=1e-3), f"{chunk_id}: still the base vector"
    info = sh("ragd info")
    assert "Error" not in info.stdout
    assert sh("ragd --version").stdout.strip() == "ragd version 1.0.10"
