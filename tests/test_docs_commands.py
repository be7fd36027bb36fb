"""Commands in the docs run after the README's set-up, and scripts they invoke can run.

After ``uv sync`` the ``fnl`` and ``torchrun`` commands live in the workspace's ``.venv``,
which is not on PATH: shell blocks write them as ``uv run fnl ...`` (a block that activates a
venv or installs with plain ``pip`` runs in its own environment). Every ``benchmarks/*.py`` or
``scripts/*.py`` with a shebang has the run bit, on disk and in git.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md")])
SHELL_BLOCK = re.compile(r"```(?:bash|sh|shell)\n(.*?)```", re.S)
BARE = re.compile(r"(fnl|torchrun|python)\b")
OWN_ENVIRONMENT = re.compile(r"(?<!uv )pip install|\bactivate\b")
SCRIPTS = sorted([*(REPO / "benchmarks").glob("*.py"), *(REPO / "scripts").glob("*.py")])


def bare_commands(text: str) -> list[str]:
    """Lines of shell blocks that start a workspace command without ``uv run``."""
    found = []
    for block in SHELL_BLOCK.findall(text):
        continued = False
        for line in block.splitlines():
            if OWN_ENVIRONMENT.search(line):
                break
            if not continued and BARE.match(line.lstrip()):
                found.append(line.strip())
            continued = line.rstrip().endswith("\\")
    return found


def test_bare_commands_are_found():
    text = "```bash\nfnl list\nuv run fnl list\npython x.py \\\n  --fnl\n```\n"
    assert bare_commands(text) == ["fnl list", "python x.py \\"]
    assert bare_commands("```bash\nsource v/bin/activate\nfnl list\n```\n") == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_shell_blocks_run_workspace_commands_through_uv_run(page):
    assert bare_commands(page.read_text()) == [], f"{page.name}: prefix with 'uv run'"


def _git_modes() -> dict[str, str]:
    try:
        out = subprocess.run(
            ["git", "ls-files", "-s", "benchmarks", "scripts"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return {}
    return {line.split("\t")[1]: line.split()[0] for line in out.splitlines()}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_with_a_shebang_are_executable(script):
    if not script.read_text().startswith("#!"):
        pytest.skip("no shebang: run with 'uv run python'")
    assert os.access(script, os.X_OK), f"{script.name}: chmod +x"
    mode = _git_modes().get(script.relative_to(REPO).as_posix())
    assert mode in (None, "100755"), f"{script.name}: git update-index --chmod=+x"


def test_the_benchmarks_have_a_shebang():
    benchmarks = [p for p in SCRIPTS if p.parent.name == "benchmarks"]
    assert benchmarks and all(p.read_text().startswith("#!") for p in benchmarks)
