"""Sessions: tests (the CI suite, CPU), demo, lint, gpu, site, slurm.

torch is pinned to the release this project is developed against (a range that 2.14.1
satisfies is declared in pyproject.toml); installing it first keeps pip from resolving a newer
multi-GB build.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True

TORCH = ["torch==2.14.1", "torchvision==0.29.1"]


def _install(session: nox.Session) -> None:
    session.install(*TORCH)
    session.install("-e", ".[test]")


@nox.session
def tests(session: nox.Session) -> None:
    """The CI suite: every CPU test but the slow ones (real-data tests skip when ../shared/data
    is absent), then the committed leaderboard must match its records."""
    _install(session)
    session.run("pytest", "-m", "not gpu and not slow", *session.posargs)
    session.run("ardbench", "leaderboard", "--check")


@nox.session
def slow(session: nox.Session) -> None:
    """The slow CPU tests (full AutoAttack runs, the robustbench cross-check)."""
    _install(session)
    session.run("pytest", "-m", "slow and not gpu", *session.posargs)


@nox.session
def demo(session: nox.Session) -> None:
    """The main job in miniature: robust teacher -> RSLAD student -> evaluation, offline on CPU."""
    _install(session)
    args = session.posargs or ["--method", "rslad", "--preset", "demo"]
    session.run("ardbench", "run", *args)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff, then mypy with pyproject.toml's [tool.mypy] (strict for the core packages)."""
    _install(session)
    session.run("ruff", "check", "ardbench", "tests", "benchmarks", "noxfile.py")
    session.run("ruff", "format", "--check", "ardbench", "tests", "noxfile.py")
    session.run("mypy")


@nox.session
def gpu(session: nox.Session) -> None:
    """Tests that need CUDA (run on a machine with a GPU)."""
    _install(session)
    session.run("pytest", "-m", "gpu", *session.posargs)


@nox.session
def site(session: nox.Session) -> None:
    """The leaderboard as a static website in site/ (open site/index.html; publish the folder)."""
    _install(session)
    session.run("ardbench", "site", *(session.posargs or ["--out", "site"]))


@nox.session
def slurm(session: nox.Session) -> None:
    """The sweeps against a real single-node Slurm cluster (root and Debian's slurm-wlm, munge,
    slurmdbd, mariadb-server): scripts/slurm/cluster.py brings it up, the tests run, it goes
    down again."""
    _install(session)
    cluster = "scripts/slurm/cluster.py"
    session.run("python", cluster, "up", external=True)
    try:
        session.run("pytest", "-m", "slurm", "tests/test_slurm.py", *session.posargs)
    finally:
        session.run("python", cluster, "down", external=True)
