"""DensePose constant tables of fnl_core.densepose are consistent with each other."""

from __future__ import annotations

from fnl_core import densepose as dp


def test_table_lengths():
    assert len(dp.FINE_CHART_NAMES) == len(dp.FINE_TO_COARSE) == len(dp.FINE_FLIP) == 25
    assert len(dp.FINE_TO_EVAL_GROUP) == 25
    assert len(dp.COARSE_PART_NAMES) == len(dp.COARSE_FLIP) == 15
    assert len(dp.EVAL_GROUP_NAMES) == len(dp.SMPL_KAPPA) == 9


def test_flips_are_involutions_and_agree_with_coarse_parts():
    for i in range(25):
        assert dp.FINE_FLIP[dp.FINE_FLIP[i]] == i
        assert dp.COARSE_FLIP[dp.FINE_TO_COARSE[i]] == dp.FINE_TO_COARSE[dp.FINE_FLIP[i]]
    for c in range(15):
        assert dp.COARSE_FLIP[dp.COARSE_FLIP[c]] == c


def test_fine_names_start_with_their_coarse_part():
    for i in range(1, 25):
        coarse = dp.COARSE_PART_NAMES[dp.FINE_TO_COARSE[i]]
        assert dp.FINE_CHART_NAMES[i].startswith(coarse)
