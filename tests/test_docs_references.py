"""Every Markdown file that source code, tests and scripts cite exists in the repository, so a
reader can follow the reference (``docs/evaluation.md, 'Body surfaces'``)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("packages", "tests", "scripts", "benchmarks", "examples")
CITED = re.compile(r"(?<![\w/.\-])((?:[\w.\-]+/)*[\w\-]+\.md)\b")


def _exists(cited: str, source: Path) -> bool:
    if "/" in cited:
        return any((base / cited).is_file() for base in (ROOT, source.parent))
    return any(p.is_file() for p in (ROOT / cited, ROOT / "docs" / cited, source.parent / cited))


def test_cited_markdown_files_exist():
    missing = []
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                missing += [
                    f"{path.relative_to(ROOT)}:{number}: {cited}"
                    for cited in CITED.findall(line)
                    if not _exists(cited, path)
                ]
    assert not missing, "cited files that are not in the repository:\n" + "\n".join(missing)
