"""Cluster execution through the Snakemake profiles in profiles/.

The unmarked tests are cheap and need no cluster: they read the profiles and the rules and check
that every rule declares threads, mem_mb and runtime, that GPU work is declared only with the
gpu/gpu_model/gres resources, and that the Slurm profile routes every GPU rule to a GPU partition.

The tests marked ``slurm`` run on the single-node Slurm that tests/slurm/start.sh starts (.ci/run
does): the demo pipeline up to models/demo-embeddings on a tiny model, a GPU rule and a failing
rule, each through ``--profile profiles/slurm`` (with tests/slurm/ci-site layered on top, as a site
would), checked through sacct. They skip when no cluster answers, or fail then if
RAGD_TRAIN_REQUIRE_SLURM=1. Every wait is bounded.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SLURM_PROFILE = ROOT / "profiles" / "slurm"
LOCAL_PROFILE = ROOT / "profiles" / "local"
SITE_PROFILE = ROOT / "tests" / "slurm" / "ci-site"
TEST_SNAKEFILE = ROOT / "tests" / "slurm" / "Snakefile"
REQUIRE_SLURM = os.environ.get("RAGD_TRAIN_REQUIRE_SLURM") == "1"

ACTIONS = {"shell", "script", "run", "wrapper", "notebook", "cwl", "template_engine"}
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL"}


# --------------------------------------------------------------------------- rule declarations


@dataclass
class RuleDecl:
    """What a rule declares, read from its source (a snakefmt-formatted Snakefile)."""

    name: str
    where: str
    directives: dict[str, str] = field(default_factory=dict)
    resources: dict[str, str] = field(default_factory=dict)

    @property
    def runs_a_job(self) -> bool:
        return bool(ACTIONS & self.directives.keys())

    @property
    def wants_gpu(self) -> bool:
        res = self.resources
        return "gpu" in res or "gpu_model" in res or "gpu" in res.get("gres", "")


def _split_top_level(text: str) -> list[str]:
    """Split ``a=1, b=f(x, y)`` on the commas outside brackets and strings."""
    parts, depth, quote, current = [], 0, "", ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        current += ch
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


def parse_rules(path: Path) -> list[RuleDecl]:
    """The rules of one Snakefile: their directives and named resources."""
    rules: list[RuleDecl] = []
    rule: RuleDecl | None = None
    directive = ""
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        start = re.match(r"(?:rule|checkpoint)\s+(\w+)\s*:", line)
        if start:
            rule = RuleDecl(start.group(1), f"{path.relative_to(ROOT)}:{lineno}")
            rules.append(rule)
            continue
        if not line.startswith(" "):
            rule = None
            continue
        if rule is None:
            continue
        head = re.match(r" {4}(\w+):\s*(.*)$", line)
        if head:
            directive, value = head.groups()
            rule.directives[directive] = value
        else:
            value = line.strip()
        if directive == "resources" and value:
            for item in _split_top_level(value):
                name, _, val = item.partition("=")
                rule.resources[name.strip()] = val.strip()
    return rules


def workflow_rules() -> list[RuleDecl]:
    files = [ROOT / "Snakefile", *sorted((ROOT / "rules").glob("*.smk"))]
    return [r for f in files for r in parse_rules(f)]


def read_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def test_every_rule_declares_threads_mem_and_runtime():
    rules = [r for r in workflow_rules() if r.runs_a_job]
    assert rules, "no rules found in Snakefile and rules/*.smk"
    missing = [
        f"{r.name} ({r.where}): {', '.join(need)}"
        for r in rules
        if (
            need := [
                what
                for what, ok in (
                    ("threads", "threads" in r.directives),
                    ("mem_mb", "mem_mb" in r.resources or "mem" in r.resources),
                    ("runtime", "runtime" in r.resources),
                )
                if not ok
            ]
        )
    ]
    assert not missing, "rules missing resource declarations:\n" + "\n".join(missing)


def test_gpu_is_declared_only_through_gpu_resources():
    """slurm_extra is rejected by the plugin for GPU requests; nothing here may use it."""
    files = [ROOT / "Snakefile", *(ROOT / "rules").glob("*.smk"), TEST_SNAKEFILE]
    files += [p for p in (ROOT / "profiles").rglob("*") if p.is_file()]
    offenders = [
        f"{p.relative_to(ROOT)}:{n}"
        for p in files
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1)
        if "slurm_extra" in line.split("#", 1)[0]
    ]
    assert not offenders, f"slurm_extra used in {offenders}; declare GPUs with gpu/gpu_model or gres"


def test_slurm_profile_routes_every_gpu_rule_to_a_gpu_partition():
    set_resources = read_yaml(SLURM_PROFILE / "config.yaml").get("set-resources") or {}
    gpu_rules = [r for r in workflow_rules() + parse_rules(TEST_SNAKEFILE) if r.wants_gpu]
    assert any(r.where.startswith("tests/") for r in gpu_rules), "the test Snakefile lost its GPU rule"
    unrouted = [
        f"{r.name} ({r.where})"
        for r in gpu_rules
        if not (set_resources.get(r.name) or {}).get("slurm_partition")
    ]
    assert not unrouted, (
        f"GPU rules without a slurm_partition under set-resources in profiles/slurm/config.yaml: {unrouted}"
    )


def test_profiles_are_snakemake_profiles():
    from snakemake.profiles import ProfileConfigFileParser

    for profile in (LOCAL_PROFILE, SLURM_PROFILE, SITE_PROFILE):
        with open(profile / "config.yaml", encoding="utf-8") as stream:
            parsed = ProfileConfigFileParser().parse(stream)  # Snakemake's own reader
        assert parsed, profile

    local = read_yaml(LOCAL_PROFILE / "config.yaml")
    assert local.get("executor", "local") == "local" and "cores" in local

    slurm = read_yaml(SLURM_PROFILE / "config.yaml")
    assert slurm["executor"] == "slurm"
    # explicit, never left to the plugin (its sacct default waits forever without accounting)
    assert slurm["slurm-status-command"] in {"sacct", "squeue"}
    assert {"mem_mb", "runtime"} <= set(slurm["default-resources"])
    # a later --profile replaces whole keys: the site layer must keep the defaults complete
    site = read_yaml(SITE_PROFILE / "config.yaml")
    assert {"mem_mb", "runtime"} <= set(site["default-resources"])


def test_cluster_scripts_are_valid_bash():
    for script in ("start.sh", "stop.sh"):
        path = ROOT / "tests" / "slurm" / script
        assert os.access(path, os.X_OK), f"{path} is not executable"
        subprocess.run(["bash", "-n", str(path)], check=True, timeout=30)


@pytest.mark.parametrize("profile", ["local", "slurm"])
def test_profile_dry_run(tmp_path, profile):
    """Snakemake (and the Slurm plugin) accept the profiles: a dry run of the demo pipeline."""
    workspace = tmp_path / "ws"
    if profile == "slurm":
        pytest.importorskip("snakemake_executor_plugin_slurm", reason="no snakemake-executor-plugin-slurm")
        args = snakemake_args(workspace)
    else:
        args = [sys.executable, "-m", "snakemake", "--profile", str(LOCAL_PROFILE)]
        args += ["--directory", str(workspace)]
    cfg = write_tiny_config(tmp_path / "tiny.yaml", Path("unused-in-a-dry-run"))
    result = subprocess.run(
        [*args, "--snakefile", str(ROOT / "Snakefile"), "--configfile", str(cfg)]
        + ["--dry-run", "--", "models/demo-embeddings"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        env=job_env(),
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    for rule in ("generate_queries", "build_training_data", "train_embeddings"):
        assert re.search(rf"^{rule}\s+1$", out, re.M), out[-4000:]


# --------------------------------------------------------------------------- helpers for the cluster


def snakemake_args(workdir: Path, *extra: str | Path) -> list[str]:
    """A snakemake command line through the Slurm profile, the test site layered over it."""
    return [
        sys.executable,
        "-m",
        "snakemake",
        "--profile",
        str(SLURM_PROFILE),
        "--profile",
        str(SITE_PROFILE),
        "--directory",
        str(workdir),
        *map(str, extra),
    ]


def job_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return env


def write_tiny_config(path: Path, model: Path) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "corpora": {"demo": {"limit": 4}},
                "generate": {"query_generator": "nollm", "queries_per_chunk": 1},
                "embeddings": {"epochs": 1, "base_model": str(model), "matryoshka_dims": "none"},
                "mining": {"model": str(model)},
            }
        ),
        encoding="utf-8",
    )
    return path


def _cluster_problem() -> str | None:
    """Why the test cluster can't be used, or None when it answers."""
    for tool in ("sinfo", "sbatch", "sacct", "scontrol"):
        if shutil.which(tool) is None:
            return f"`{tool}` not found: start the test cluster with tests/slurm/start.sh"
    try:
        sinfo = subprocess.run(["sinfo", "-h", "-o", "%P %T"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "the Slurm controller does not answer within 20 s (tests/slurm/start.sh starts it)"
    if sinfo.returncode != 0:
        return f"sinfo fails ({sinfo.stderr.strip()[:200]}): start the cluster with tests/slurm/start.sh"
    states = sinfo.stdout.split()
    up = {"idle", "mixed", "allocated", "completing"}
    partitions = {p.rstrip("*") for p, s in zip(states[::2], states[1::2], strict=False) if s in up}
    if not {"cpu", "gpu"} <= partitions:
        return f"partitions cpu and gpu are not up (sinfo: {' '.join(states)}); run tests/slurm/start.sh"
    try:
        sacct = subprocess.run(["sacct", "-n", "-X", "-S", "now-1minutes"], capture_output=True, timeout=20)
    except subprocess.TimeoutExpired:
        sacct = None
    if sacct is None or sacct.returncode != 0:
        return "sacct does not answer: the cluster runs without slurmdbd accounting"
    try:  # after sinfo: importing the plugin asks scontrol, which hangs ~10 s without a controller
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        return "snakemake-executor-plugin-slurm is not installed (pip install -e '.[test]')"
    return None


@pytest.fixture(scope="module")
def cluster() -> None:
    problem = _cluster_problem()
    if problem:
        if REQUIRE_SLURM:
            pytest.fail(f"RAGD_TRAIN_REQUIRE_SLURM=1 but {problem}")
        pytest.skip(problem)


@dataclass
class Run:
    returncode: int
    output: str
    run_id: str


def run_on_cluster(args: list[str], timeout: float) -> Run:
    """Run snakemake with a job-name prefix of its own; on timeout cancel its Slurm jobs and fail."""
    prefix = f"ragdtest_{uuid.uuid4().hex[:12]}"
    cmd = args[:3] + ["--slurm-jobname-prefix", prefix] + args[3:]  # after "python -m snakemake"
    try:
        result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=job_env())
    except subprocess.TimeoutExpired as exc:
        cancel_jobs(prefix)
        out = "".join(
            o.decode(errors="replace") if isinstance(o, bytes) else o for o in (exc.stdout, exc.stderr) if o
        )
        pytest.fail(f"snakemake did not finish in {timeout:.0f} s; its jobs were cancelled\n{out[-4000:]}")
    output = result.stdout + result.stderr
    match = re.search(r"SLURM run ID: (\S+)", output)
    assert match, f"no SLURM run ID in the output: did the slurm executor run?\n{output[-4000:]}"
    return Run(result.returncode, output, match.group(1))


def cancel_jobs(prefix: str) -> None:
    listing = subprocess.run(["squeue", "-h", "-o", "%i %j"], capture_output=True, text=True, timeout=15)
    jobs = (line.partition(" ") for line in listing.stdout.splitlines())
    ids = [job_id for job_id, _, name in jobs if name.startswith(prefix)]
    if ids:
        subprocess.run(["scancel", *ids], timeout=15, check=False)


def sacct_jobs(run_id: str, expected: int, timeout: float = 60) -> list[dict[str, str]]:
    """The run's jobs as accounted by slurmdbd, once all ``expected`` of them are in a final state."""
    fields = ["JobID", "JobName", "State", "ExitCode", "Partition", "Account", "ReqTRES", "Comment"]
    rows: list[dict[str, str]] = []
    deadline = time.monotonic() + timeout
    while True:
        result = subprocess.run(
            ["sacct", "-X", "-P", "-n", "-S", "now-3hours", "--name", run_id, "-o", ",".join(fields)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        rows = [dict(zip(fields, line.split("|"), strict=False)) for line in result.stdout.splitlines()]
        states = [r["State"].split()[0] for r in rows]
        if len(rows) >= expected and all(s in FINAL_STATES for s in states):
            return rows
        if time.monotonic() > deadline:
            pytest.fail(f"sacct shows {rows} for {run_id} after {timeout} s; want {expected} finished jobs")
        time.sleep(1)


def rule_of(row: dict[str, str]) -> str:
    """The rule a job ran, from the comment the plugin gives it (rule_<name>[_wildcards_...])."""
    return re.sub(r"_wildcards_.*$", "", row["Comment"]).removeprefix("rule_")


# --------------------------------------------------------------------------- on the cluster


@pytest.mark.slurm
def test_demo_pipeline_runs_as_slurm_jobs(cluster, request, tmp_path):
    tiny_model = request.getfixturevalue("tiny_model")  # only once the cluster answers
    cfg = write_tiny_config(tmp_path / "tiny.yaml", tiny_model)
    workspace = tmp_path / "ws"
    run = run_on_cluster(
        snakemake_args(
            workspace,
            "--snakefile",
            ROOT / "Snakefile",
            "--configfile",
            ROOT / "config" / "config.yaml",
            cfg,
            "--",
            "models/demo-embeddings",
        ),
        timeout=900,
    )
    assert run.returncode == 0, run.output[-6000:]
    model = workspace / "models" / "demo-embeddings"
    assert (model / "modules.json").is_file() or (model / "config.json").is_file(), sorted(model.iterdir())

    jobs = sacct_jobs(run.run_id, expected=3)
    by_rule = {rule_of(j): j for j in jobs}
    assert set(by_rule) == {"generate_queries", "build_training_data", "train_embeddings"}, jobs
    for job in jobs:
        assert (job["State"], job["Partition"], job["Account"]) == ("COMPLETED", "cpu", "ci"), job
    # what each rule declares is what Slurm was asked for
    declared = {r.name: r for r in workflow_rules()}
    for name, job in by_rule.items():
        rule = declared[name]
        threads, mem = rule.directives.get("threads", "1"), rule.resources.get("mem_mb", "")
        if threads.isdigit():
            assert f"cpu={threads}," in job["ReqTRES"] + ",", (name, job)
        if mem.isdigit():
            assert f"mem={mem}M" in job["ReqTRES"], (name, job)


@pytest.mark.slurm
def test_gpu_rule_is_submitted_with_its_gpu_request(cluster, tmp_path):
    workspace = tmp_path / "ws"
    run = run_on_cluster(
        snakemake_args(workspace, "--snakefile", TEST_SNAKEFILE, "--", "gpu_job.txt"), timeout=300
    )
    assert run.returncode == 0, run.output[-6000:]
    (job,) = sacct_jobs(run.run_id, expected=1)
    assert rule_of(job) == "train_lora" and job["State"] == "COMPLETED", job
    assert job["Partition"] == "gpu", f"the profile did not route the GPU rule to the gpu partition: {job}"
    assert "gres/gpu=1" in job["ReqTRES"] and "gres/gpu:a100=1" in job["ReqTRES"], job
    assert "partition=gpu" in (workspace / "gpu_job.txt").read_text(encoding="utf-8")


@pytest.mark.slurm
def test_failing_rule_fails_the_run_with_a_clear_message(cluster, tmp_path):
    run = run_on_cluster(
        snakemake_args(tmp_path / "ws", "--snakefile", TEST_SNAKEFILE, "--", "never.txt"), timeout=300
    )
    assert run.returncode != 0, run.output[-6000:]
    assert "Error in rule fails" in run.output, run.output[-6000:]
    assert re.search(r"SLURM-job '\d+' failed, SLURM status is: 'FAILED'", run.output), run.output[-6000:]
    assert "deliberate failure for the test" in run.output  # the job's log is shown
    (job,) = sacct_jobs(run.run_id, expected=1)
    assert rule_of(job) == "fails" and job["State"] == "FAILED" and job["ExitCode"] == "1:0", job
