"""Build every paper backbone and print a Markdown table of measured channels and parameters.

``python -m fnl_backbones.report`` (random init, no download; about a minute on a laptop CPU).
The table in ``docs/backbones.md`` is this command's output.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable

from fnl_backbones.paper import B_REST_PARAMS, MOBILE_B_BACKBONE, PAPER_BACKBONES, PaperBackbone

HEADER = (
    "| paper backbone | timm name | features | channels (strides 4/8/16/32) | top-1 | "
    "backbone #params (measured) | detector #params (recipe) | paper #params |\n"
    "|---|---|---|---|---|---|---|---|"
)


def _n(value: int) -> str:
    return f"{value:,}".replace(",", " ")


def _features(rec: PaperBackbone) -> str:
    if rec.stages is not None:
        return "stages " + ", ".join(f"s{s}" for s in rec.stages)
    where = " (expansion)" if rec.feature_location else ""
    return "out_indices " + ", ".join(str(i) for i in rec.out_indices or ()) + where


def measure(rec: PaperBackbone) -> tuple[list[int], list[int], int]:
    """(channels, strides, parameter count) of ``rec`` built with its paper settings."""
    from fnl_backbones.config import TimmBackboneConfig
    from fnl_backbones.norm import count_parameters

    backbone = TimmBackboneConfig.model_validate(rec.backbone_spec()).build()
    shapes = list(backbone.output_shape().values())
    return [s.channels for s in shapes], [s.stride for s in shapes], count_parameters(backbone)


def rows(records: Iterable[PaperBackbone]) -> Iterable[str]:
    """One Markdown row per record, from a real build (raises if a number disagrees)."""
    for rec in records:
        channels, strides, params = measure(rec)
        if tuple(channels) != rec.fpn_channels or tuple(strides) != rec.strides:
            raise AssertionError(f"{rec.timm_name}: built {channels} at {strides}")
        if params != rec.backbone_params:
            raise AssertionError(
                f"{rec.timm_name}: {params} parameters, table says {rec.backbone_params}"
            )
        if rec is MOBILE_B_BACKBONE:
            detector = f"{_n(params + B_REST_PARAMS)} (B)"
        else:
            detector = _n(rec.detector_params_a)
        yield (
            f"| {rec.paper_name} | `{rec.timm_name}` | {_features(rec)} | "
            f"{'/'.join(map(str, channels))} | {rec.top1} | {_n(params)} | {detector} | "
            f"{rec.paper_params_m:.2f} M |"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="timm names to measure (default: all)")
    args = parser.parse_args(argv)
    records = [*PAPER_BACKBONES, MOBILE_B_BACKBONE]
    if args.names:
        records = [r for r in records if r.timm_name in args.names]
    print(HEADER)
    for row in rows(records):
        print(row, flush=True)


if __name__ == "__main__":
    main()
