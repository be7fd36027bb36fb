"""``fnl COMMAND --help`` is plain text: descriptions and option help built from docstrings
lose their reStructuredText markup."""

from __future__ import annotations

import argparse
import re

import pytest

from fnl_core.cli import build_parser

MARKUP = re.compile(r"``|:(?:func|mod|class|meth|attr|data|exc|obj):`")


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_plain_text_drops_roles_and_literals():
    from fnl_core.cli import plain_text

    text = "via :class:`fnl_detector.Predictor`, :func:`~fnl_core.imaging.read_image` and ``x.png``"
    assert plain_text(text) == "via fnl_detector.Predictor, read_image and x.png"
    assert plain_text(None) is None


@pytest.mark.parametrize("name", sorted(_subparsers()))
def test_help_has_no_restructuredtext_markup(name):
    parser = _subparsers()[name]
    text = parser.format_help()
    assert not MARKUP.search(text), f"fnl {name} --help: {MARKUP.search(text).group(0)!r}"
    assert not MARKUP.search(build_parser().format_help())
