"""No test asserts something that cannot fail: a non-empty list, tuple, set, dict or
comprehension, a generator, a string or another constant is always (or never) true, so
``assert [x > 0 for x in xs]`` passes whatever ``xs`` holds. Use ``all(...)``, or one assert
per item."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALWAYS_THE_SAME = (
    ast.List,
    ast.Tuple,
    ast.Set,
    ast.Dict,
    ast.ListComp,
    ast.SetComp,
    ast.DictComp,
    ast.GeneratorExp,
    ast.Constant,
    ast.JoinedStr,
    ast.Lambda,
)


def test_no_assert_is_a_constant_or_a_container():
    found = []
    for folder in ("tests", "packages", "examples", "scripts", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
            found += [
                f"{path.relative_to(ROOT)}:{node.lineno}: assert {ast.unparse(node.test)[:80]}"
                for node in ast.walk(tree)
                if isinstance(node, ast.Assert) and isinstance(node.test, ALWAYS_THE_SAME)
            ]
    assert not found, "asserts that cannot fail:\n" + "\n".join(found)
