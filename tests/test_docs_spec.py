"""docs/spec.md is generated from the pydantic models: fail when it is stale."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from fnl_core import registry
from fnl_core.groups import PRESETS, SPECS

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gen_spec_docs.py"

pytestmark = pytest.mark.skipif(
    "detector" not in registry.names(SPECS) or not registry.names(PRESETS),
    reason="needs fnl-detector (the detector spec and its presets)",
)


def _generator():
    spec = importlib.util.spec_from_file_location("gen_spec_docs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_spec_reference_is_up_to_date():
    text = _generator().render()
    current = (ROOT / "docs" / "spec.md").read_text(encoding="utf-8")
    assert current == text, "docs/spec.md is stale: run python scripts/gen_spec_docs.py"


def test_spec_reference_covers_every_field_and_a_worked_example_that_validates():
    import json

    from fnl_core.spec import component_group_of

    gen = _generator()
    model = registry.get(SPECS, "detector")
    text = gen.render()
    for name, field in model.model_fields.items():
        assert f"| `{name}` |" in text, name
        section = gen._is_section(field.annotation)
        for sub in section.model_fields if section and component_group_of(field) is None else []:
            assert f"| `{name}.{sub}` |" in text, f"{name}.{sub}"
    examples = text.split("## Worked examples")[1].split("```json\n")[1:]
    assert examples
    for block in examples:
        model.model_validate(json.loads(block.split("```")[0]))  # each example is a whole spec
