"""The per-platform conda envs in envs/ agree with pyproject.toml.

No conda channel is reachable here, so the env files are checked by parsing them and comparing
them with the project's own dependencies, not by solving them: every dependency of pyproject.toml
(and of each optional-dependency group, read at test time) is in every env that needs it, with
version bounds at least as strict as pyproject's; every package an env adds is either one of
pyproject's or a known platform package; and every ``conda:`` directive of the rules names one of
these files.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[2]
ENVS = ROOT / "envs"

# env -> the platform its packages are for (pyproject markers are evaluated against it)
PLATFORMS = {
    "cpu": {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64"},
    "cuda": {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64"},
    "mlx": {"sys_platform": "darwin", "platform_system": "Darwin", "platform_machine": "arm64"},
}
# pyproject optional-dependency group -> the envs that must carry it. A new group must be added
# here (the test says so), deciding which platforms need it.
EXTRA_ENVS: dict[str, tuple[str, ...]] = {
    "eval": ("cpu", "cuda", "mlx"),  # the evaluate_embeddings rule runs everywhere
    "local": ("cpu",),  # the in-process query generator (generate_queries runs in cpu.yaml)
    "test": (),
    "ragd": (),  # ragd's own CLI beside ours (tests, users); no rule imports ragd
    "dev": (),
    "docs": (),
    "cuda": ("cuda",),
    "unsloth": ("cuda",),
    "mlx": ("mlx",),
}
# pyproject (PyPI) name -> the conda-forge names that provide it
CONDA_ALIASES = {
    "torch": {"torch", "pytorch", "pytorch-cpu", "pytorch-gpu"},
    "matplotlib": {"matplotlib", "matplotlib-base"},  # -base: without the Qt backend
}
# packages an env may add that pyproject.toml does not list: the interpreter and platform runtime,
# and the LoRA stack until pyproject grows the matching `cuda` / `mlx` groups (then they are
# checked like any other dependency)
ENV_ONLY = {"python", "pip", "cuda-version", "unsloth", "peft", "trl", "bitsandbytes", "mlx-lm", "mlx"}
# what marks each env as the one for its platform
PLATFORM_PACKAGES = {"cpu": {"pytorch-cpu"}, "cuda": {"pytorch-gpu", "unsloth"}, "mlx": {"mlx-lm"}}

CONDA_SPEC = re.compile(r"^(?:[\w.-]+::)?(?P<name>[A-Za-z0-9_.\-]+)\s*(?P<version>[<>=!~][^\s]*)?$")


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


class EnvFile:
    """One conda env file: its conda and pip packages as name -> version specifier."""

    def __init__(self, name: str):
        self.name = name
        self.path = ENVS / f"{name}.yaml"
        self.data = yaml.safe_load(self.path.read_text(encoding="utf-8"))
        self.conda: dict[str, SpecifierSet] = {}
        self.pip: dict[str, SpecifierSet] = {}
        self.errors: list[str] = []
        for dep in self.data.get("dependencies") or []:
            if isinstance(dep, dict) and set(dep) == {"pip"}:
                for line in dep["pip"] or []:
                    if not line.startswith("-"):  # pip options such as -e or --index-url
                        self._add_pip(line)
            elif isinstance(dep, str):
                self._add_conda(dep)
            else:
                self.errors.append(f"unexpected dependency entry {dep!r}")

    def _add_conda(self, dep: str) -> None:
        match = CONDA_SPEC.match(dep.strip())
        if not match:
            self.errors.append(f"conda spec {dep!r}: write `name >=x,<y` (PEP 440 operators)")
            return
        version = match["version"] or ""
        if re.search(r"(^|,)=[^=]", version) or "|" in version:
            self.errors.append(f"conda spec {dep!r}: fuzzy `=x` or `|` can't be compared; use >=,<")
            return
        try:
            self.conda[normalize(match["name"])] = SpecifierSet(version)
        except InvalidSpecifier:
            self.errors.append(f"conda spec {dep!r}: version is not a PEP 440 specifier")

    def _add_pip(self, line: str) -> None:
        try:
            req = Requirement(line)
        except Exception:  # packaging raises InvalidRequirement
            self.errors.append(f"pip requirement {line!r} does not parse")
            return
        self.pip[normalize(req.name)] = req.specifier

    def find(self, name: str) -> tuple[str, SpecifierSet] | None:
        """Where the env provides PyPI package ``name``: (section and package, its specifier)."""
        norm = normalize(name)
        if norm in self.pip:
            return f"pip {norm}", self.pip[norm]
        for alias in sorted(CONDA_ALIASES.get(norm, {norm})):
            if alias in self.conda:
                return f"conda {alias}", self.conda[alias]
        return None

    @property
    def packages(self) -> set[str]:
        return set(self.conda) | set(self.pip)


def _probes(*specs: SpecifierSet) -> list[Version]:
    """Versions that decide containment between interval specifiers: every bound, a version just
    above each bound, and versions below and above them all (membership is constant in between)."""
    bounds = sorted({Version(s.version.rstrip(".*")) for spec in specs for s in spec})
    probes = [Version("0.0.0.1")]
    for v in bounds:
        probes += [v, Version(f"{v.base_version}.0.0.0.1")]
    if bounds:
        probes.append(Version(f"{bounds[-1].major + 1000}"))
    return probes


def at_least_as_strict(env: SpecifierSet, project: SpecifierSet) -> bool:
    """True when every version ``env`` allows is one ``project`` allows (and env allows some)."""
    probes = _probes(env, project)
    allowed = [v for v in probes if env.contains(v, prereleases=True)]
    return bool(allowed) and all(project.contains(v, prereleases=True) for v in allowed)


def required_by(env: str) -> list[tuple[str, Requirement]]:
    """(group, requirement) for every pyproject dependency that ``env`` must carry."""
    project = pyproject()["project"]
    groups = [("dependencies", project.get("dependencies", []))]
    groups += [
        (f"[{extra}]", reqs)
        for extra, reqs in project.get("optional-dependencies", {}).items()
        if env in EXTRA_ENVS.get(extra, ())
    ]
    marker_env = {**default_environment(), **PLATFORMS[env]}
    out = []
    for group, reqs in groups:
        for line in reqs:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({**marker_env, "extra": ""}):
                out.append((group, req))
    return out


@pytest.fixture(params=sorted(PLATFORMS), ids=lambda name: f"envs/{name}.yaml")
def env(request) -> EnvFile:
    return EnvFile(request.param)


def test_env_file_parses(env):
    assert not env.errors, f"{env.path.name}: " + "; ".join(env.errors)
    assert env.data.get("name"), f"{env.path.name} has no name"
    channels = env.data.get("channels") or []
    assert "conda-forge" in channels and "defaults" not in channels, (env.path.name, channels)
    if env.pip:
        assert "pip" in env.conda, f"{env.path.name} has a pip section but does not install pip"
    python = env.conda.get("python")
    assert python is not None and python, f"{env.path.name} must pin python"
    requires_python = SpecifierSet(pyproject()["project"].get("requires-python", ""))
    assert at_least_as_strict(python, requires_python), (
        f"{env.path.name}: python {python} allows versions outside requires-python {requires_python}"
    )


def test_env_has_every_project_dependency(env):
    problems = []
    for group, req in required_by(env.name):
        found = env.find(req.name)
        if found is None:
            problems.append(f"{req} ({group}) is missing")
        elif req.specifier and not at_least_as_strict(found[1], req.specifier):
            problems.append(f"{req} ({group}): {found[0]} {found[1] or '(no bound)'} is looser or disjoint")
    assert not problems, f"{env.path.name} vs pyproject.toml:\n" + "\n".join(problems)


def test_env_adds_only_project_or_platform_packages(env):
    project = pyproject()["project"]
    lines = project.get("dependencies", []) + [
        line for reqs in project.get("optional-dependencies", {}).values() for line in reqs
    ]
    known = {normalize(Requirement(line).name) for line in lines}
    known |= {alias for name in known for alias in CONDA_ALIASES.get(name, ())}
    extra = sorted(env.packages - known - ENV_ONLY)
    assert not extra, f"{env.path.name} installs {extra}, which pyproject.toml does not list"


def test_env_is_for_its_platform(env):
    assert PLATFORM_PACKAGES[env.name] <= env.packages, (env.path.name, PLATFORM_PACKAGES[env.name])
    others = set().union(*(p for name, p in PLATFORM_PACKAGES.items() if name != env.name))
    assert not (others & env.packages) - PLATFORM_PACKAGES[env.name], env.path.name


def test_every_optional_dependency_group_is_mapped_to_envs():
    extras = set(pyproject()["project"].get("optional-dependencies", {}))
    unmapped = sorted(extras - set(EXTRA_ENVS))
    assert not unmapped, (
        f"pyproject.toml extras {unmapped} are not in EXTRA_ENVS of tests/workflow/test_envs.py: "
        "add them with the envs (cpu, cuda, mlx) that must carry them, () for none"
    )


def test_conda_directives_name_env_files():
    """Every string `conda:` directive in the workflow points at an existing file under envs/."""
    problems = []
    for path in [ROOT / "Snakefile", *sorted((ROOT / "rules").glob("*.smk"))]:
        lines = path.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            head = re.match(r"\s+conda:\s*(.*)$", line)
            if not head:
                continue
            value = head.group(1) or next((v.strip() for v in lines[i + 1 :] if v.strip()), "")
            quoted = re.fullmatch(r"""(['"])(.+)\1,?""", value.strip())
            if not quoted:  # a function choosing the env at run time
                continue
            target = (path.parent / quoted.group(2)).resolve()
            if target.parent != ENVS or not target.is_file():
                problems.append(f"{path.relative_to(ROOT)}:{i + 1}: {quoted.group(2)}")
    assert not problems, "conda: directives not naming a file in envs/: " + ", ".join(problems)


@pytest.mark.parametrize(
    ("env", "project", "ok"),
    [
        (">=2.2", ">=2.2", True),
        (">=2.3,<3", ">=2.2", True),
        (">=2.1", ">=2.2", False),
        ("", ">=2.2", False),
        (">=5.1,<7", ">=5.1,<7", True),
        (">=5.1", ">=5.1,<7", False),
        (">=5.1,<8", ">=5.1,<7", False),
        (">=3.10,<3.13", ">=3.10", True),
        ("==2.5", ">=2.2", True),
        (">=9.0,<10", ">=9,<10", True),
    ],
)
def test_at_least_as_strict(env, project, ok):
    assert at_least_as_strict(SpecifierSet(env), SpecifierSet(project)) is ok
