"""README.md and docs/ stand on their own: every relative link resolves inside the repository
(anchors included), and nothing refers to reference material kept outside it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted(
    [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "examples").glob("*/README.md")]
)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
CODE_BLOCK = re.compile(r"^```.*?^```", re.S | re.M)
OUTSIDE_SPEC = re.compile(r"\bspec/(paper_numbers|losses|model|data_format|evaluation)\.md")


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = CODE_BLOCK.sub("", page.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    anchors = set()
    for line in text.splitlines():
        if line.startswith("#"):
            slug = _slug(line.lstrip("#"))
            count = seen.get(slug, 0)
            anchors.add(slug if count == 0 else f"{slug}-{count}")
            seen[slug] = count + 1
    return anchors


def _links(page: Path) -> list[str]:
    return LINK.findall(CODE_BLOCK.sub("", page.read_text(encoding="utf-8")))


def test_slug_follows_github():
    assert _slug(" From the predictor outputs to per-pixel I, U, V") == (
        "from-the-predictor-outputs-to-per-pixel-i-u-v"
    )
    assert _slug("`backbone`: `timm` (fnl-backbones)") == "backbone-timm-fnl-backbones"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve_inside_the_repository(page):
    problems = []
    for target in _links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) and not target.startswith("file:"):
            continue  # http(s), mailto: not checked here
        path_part, _, anchor = target.partition("#")
        if target.startswith("file:") or path_part.startswith("/"):
            problems.append(f"{target}: absolute links point outside the repository")
            continue
        resolved = (page.parent / path_part).resolve() if path_part else page
        if not resolved.is_relative_to(ROOT):
            problems.append(f"{target}: points outside the repository")
        elif not resolved.exists():
            problems.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            problems.append(f"{target}: no heading with anchor #{anchor} in {resolved.name}")
    assert not problems, f"{page.relative_to(ROOT)}: " + "; ".join(problems)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_reference_to_material_outside_the_repository(page):
    text = page.read_text(encoding="utf-8")
    found = sorted({m.group(0) for m in OUTSIDE_SPEC.finditer(text)})
    assert not found, f"{page.relative_to(ROOT)} refers to {found}, which are not in the repo"
    assert "/work/shared" not in text
