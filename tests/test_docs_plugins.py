"""docs/plugins.md stays true: it covers every registry group, and the code it quotes is the
example plugin's real code."""

from __future__ import annotations

import re
from pathlib import Path

from fnl_core.groups import ALL_GROUPS

ROOT = Path(__file__).resolve().parents[1]
GUIDE = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
PLUGIN = ROOT / "examples" / "fnl-plugin-example"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", GUIDE, re.S | re.M)


def _lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines() if line.strip()]


def test_contract_table_covers_every_group():
    table = GUIDE.split("## What each group's `build` receives and returns")[1].split("\n## ")[0]
    missing = [g for g in ALL_GROUPS if f"| `{g}` |" not in table]
    assert not missing, f"docs/plugins.md does not describe {missing}"


def test_quoted_code_is_the_example_plugins_code():
    sources = {
        "toml": (PLUGIN / "pyproject.toml").read_text(encoding="utf-8"),
        "python": "\n".join(p.read_text(encoding="utf-8") for p in (PLUGIN / "src").rglob("*.py")),
    }
    for language, source in sources.items():
        blocks = _blocks(language)
        assert blocks, language
        real = set(_lines(source))
        for block in blocks:
            if "registry.registered" in block:  # the in-process example, not plugin code
                continue
            stale = [
                line for line in _lines(block) if line not in real and not line.startswith("#")
            ]
            assert not stale, f"{language} lines not in the example plugin: {stale}"
