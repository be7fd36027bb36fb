"""Named models in Python and their data (issue #24, item 7): ``Predictor(NAME)`` gets the
card's spec and hash-checked weights, a spec without weights is refused unless random weights
are asked for, ``fnl list models`` says which data each AP is on, and a toy-only model warns on
images that are not toy data."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
from detector_standins import missing_zoo

from fnl_core.cli import main
from fnl_core.errors import InputError
from fnl_core.models import get_card
from fnl_detector.commands._weights import warn_toy_only
from fnl_detector.predictor import Predictor
from fnl_detector.weights import read_weights

TOY = "mobile_parsing_rcnn_b_toy"


@pytest.mark.skipif(
    bool(missing_zoo()), reason=f"the toy model's parts need {', '.join(missing_zoo())}"
)
def test_predictor_of_a_named_model_has_its_weights():
    predictor = Predictor(TOY, device="cpu", backend="torch", optimize=False)
    saved = read_weights(get_card(TOY).packaged_weights())
    state = predictor.model.state_dict()
    key = next(k for k in saved if k.endswith("weight") and saved[k].ndim == 4)
    assert torch.equal(state[key], saved[key])
    assert set(predictor(np.zeros((64, 80, 3), np.uint8))) >= {"boxes", "scores"}


def test_a_spec_without_weights_is_refused_unless_asked_for():
    with pytest.raises(InputError, match="random_weights=True"):
        Predictor("mobile_parsing_rcnn_b", device="cpu")
    with pytest.raises(InputError, match="untrained"):
        Predictor(TOY, "some.safetensors", random_weights=True)


def test_list_models_names_the_data_of_each_ap(capsys):
    assert main(["list", "models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "dataset" in lines[0] and "(on dataset)" in lines[0]
    toy = next(line for line in lines if line.startswith(TOY + " "))
    coco = next(line for line in lines if line.startswith("densepose_rcnn_r_50_fpn_s1x "))
    assert " toy " in toy and " coco " in coco


def test_toy_model_warns_on_images_that_are_not_toy_data(tmp_path, capsys):
    args = argparse.Namespace(model=TOY)
    toy_image = tmp_path / "toy" / "abc123" / "val" / "0001.png"
    warn_toy_only(args, [toy_image], "predict")
    assert capsys.readouterr().err == ""
    warn_toy_only(args, [toy_image, tmp_path / "photo.jpg"], "predict")
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "synthetic toy people only" in err and "photo.jpg" in err
    warn_toy_only(
        argparse.Namespace(model="densepose_rcnn_r_50_fpn_s1x"), [tmp_path / "p.jpg"], "x"
    )
    assert capsys.readouterr().err == ""
