"""Zoo components: chart predictor with confidences, Gaussian UV losses, CSE predictor and
mesh embedders, the DensePose FPN feature decoder, detectron2's GroupNorm DeepLab layout."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from fnl_core.spec import ShapeSpec
from fnl_heads.config import (
    ChartPredictorConfig,
    DeepLabHeadConfig,
    EmbeddingPredictorConfig,
    FPNDecoderConfig,
    VertexDirectEmbedderConfig,
    VertexFeatureEmbedderConfig,
)
from fnl_heads.losses import (
    iid_isotropic_gaussian_uv_loss,
    indep_anisotropic_gaussian_uv_loss,
)


def rois(channels: int = 16, size: int = 8, n: int = 3) -> torch.Tensor:
    return torch.randn(n, channels, size, size, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    ("uv", "extra"),
    [("", set()), ("iid_iso", {"sigma_2"}), ("indep_aniso", {"sigma_2", "kappa_u", "kappa_v"})],
)
def test_chart_predictor_uv_confidence_outputs(uv, extra):
    torch.manual_seed(0)
    p = ChartPredictorConfig(coarse_channels=2, uv_confidence=uv).build(16, 16)
    out = p(rois())
    assert set(out) == {"coarse_segm", "fine_segm", "u", "v"} | extra
    assert out["coarse_segm"].shape == (3, 2, 16, 16)
    for key in extra:
        assert out[key].shape == (3, 25, 16, 16)
        # raw deconv outputs: no softplus at inference
        torch.testing.assert_close(out[key], getattr(p, f"{key}_lowres")(rois()))


def test_segmentation_confidence_rescales_the_logits():
    torch.manual_seed(0)
    p = ChartPredictorConfig(coarse_channels=2, segm_confidence=True).build(16, 16)
    with torch.no_grad():
        p.fine_segm_confidence_lowres.bias.fill_(0.3)
    x = rois()
    out = p(x)
    conf = F.softplus(p.fine_segm_confidence_lowres(x)) + 0.01
    torch.testing.assert_close(out["fine_segm_confidence"], conf)
    torch.testing.assert_close(out["fine_segm"], p.index_uv_lowres(x) * conf)
    coarse_conf = F.softplus(p.coarse_segm_confidence_lowres(x)) + 0.01
    torch.testing.assert_close(out["coarse_segm"], p.ann_index_lowres(x) * coarse_conf)
    assert out["coarse_segm_confidence"].shape == (3, 1, 16, 16)


def test_predictor_resizes_to_the_heatmap_as_detectron2():
    """28x28 RoIs -> deconv 56 -> bilinear x2 = 112 (detectron2 UP_SCALE 2)."""
    torch.manual_seed(0)
    p = ChartPredictorConfig(coarse_channels=2).build(8, 112)
    x = rois(8, 28, 1)
    out = p(x)
    expected = F.interpolate(p.u_lowres(x), scale_factor=2, mode="bilinear", align_corners=False)
    torch.testing.assert_close(out["u"], expected)


def test_invalid_confidence_type_is_rejected():
    with pytest.raises(ValidationError, match="uv_confidence"):
        ChartPredictorConfig(uv_confidence="diag")


def test_gaussian_uv_losses_match_their_formulas():
    g = torch.Generator().manual_seed(1)
    u, v, s, ku, kv, ug, vg = (torch.randn(50, generator=g) for _ in range(7))
    sigma2 = F.softplus(s) + 0.01
    iso = 0.5 * (
        math.log(2 * math.pi) + 2 * sigma2.log() + ((u - ug) ** 2 + (v - vg) ** 2) / sigma2
    )
    torch.testing.assert_close(iid_isotropic_gaussian_uv_loss(u, v, s, ug, vg, 0.01), iso.sum())
    # the anisotropic one is the Gaussian NLL with covariance sigma2 I + r r^T (up to a constant)
    cov = (
        sigma2[:, None, None] * torch.eye(2)
        + torch.stack([ku, kv], 1)[:, :, None] * torch.stack([ku, kv], 1)[:, None, :]
    )
    dist = torch.distributions.MultivariateNormal(torch.stack([u, v], 1), covariance_matrix=cov)
    # DensePose's constant is 0.5 log(2 pi) per point, half the 2-d Gaussian's (no gradient)
    expected = -dist.log_prob(torch.stack([ug, vg], 1)).sum() - 50 * 0.5 * math.log(2 * math.pi)
    got = indep_anisotropic_gaussian_uv_loss(u, v, s, ku, kv, ug, vg, 0.01)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-3)


def test_cse_predictor_and_feature_embedder():
    torch.manual_seed(0)
    p = EmbeddingPredictorConfig(embed_size=4).build(16, 16)
    out = p(rois())
    assert set(out) == {"coarse_segm", "embedding"}
    assert out["embedding"].shape == (3, 4, 16, 16) and out["coarse_segm"].shape == (3, 2, 16, 16)
    emb = VertexFeatureEmbedderConfig(mesh_name="toy", num_vertices=7, feature_dim=5).build(4)
    assert [k for k, _ in emb.named_buffers()] == ["embedder_toy.features"]
    assert [k for k, _ in emb.named_parameters()] == ["embedder_toy.embeddings"]
    with torch.no_grad():
        emb.embedder_toy.features.copy_(torch.randn(7, 5))
        emb.embedder_toy.embeddings.copy_(torch.randn(5, 4))
    vertices = emb("toy")
    expected = emb.embedder_toy.features @ emb.embedder_toy.embeddings
    torch.testing.assert_close(vertices, expected / expected.norm(dim=1, keepdim=True))
    with pytest.raises(KeyError, match="unknown mesh 'smpl'"):
        emb("smpl")
    direct = VertexDirectEmbedderConfig(mesh_name="toy", num_vertices=7).build(4)
    assert direct("toy").shape == (7, 4)


def test_fpn_decoder_layout_and_output():
    torch.manual_seed(0)
    shapes = {f"p{k}": ShapeSpec(channels=32, stride=2**k) for k in (2, 3, 4, 5)}
    dec = FPNDecoderConfig(conv_dims=32, num_classes=16).build(shapes)
    keys = {k for k in dec.state_dict()}
    assert {"p2.0.weight", "p3.0.weight", "p4.2.weight", "p5.4.bias", "predictor.weight"} <= keys
    assert "p4.1.weight" not in keys  # p4.1 is the upsampling
    feats = [torch.randn(1, 32, 64 // 2**k, 64 // 2**k) for k in range(4)]
    out = dec(feats)
    assert out.shape == (1, 16, 64, 64) and dec.common_stride == 4
    # p2 alone: conv + ReLU then the 1x1 predictor
    single = FPNDecoderConfig(conv_dims=32, num_classes=16).build({"p2": shapes["p2"]})
    conv = single.p2[0]
    expected = single.predictor(F.relu(F.conv2d(feats[0], conv.weight, conv.bias, padding=1)))
    torch.testing.assert_close(single([feats[0]]), expected)
    with pytest.raises(ValueError, match="multiple of 32"):
        FPNDecoderConfig(conv_dims=48, norm="gn").build(shapes)


def test_detectron2_deeplab_layout():
    head = DeepLabHeadConfig(
        aspp_channels=32,
        project_channels=32,
        channels=64,
        num_convs=2,
        dilations=[6, 12, 56],
        norm="gn",
    ).build(in_channels=32)
    keys = set(head.state_dict())
    assert "body_conv_fcn1.norm.weight" in keys and "body_conv_fcn1.bias" not in keys
    assert "ASPP.convs.4.2.weight" in keys and "ASPP.project.0.bias" not in keys
    assert head(rois(32, 8)).shape == (3, 64, 8, 8)


def test_chart_loss_with_uv_confidence_trains_the_confidences():
    from test_losses import C, S, make_loss, random_outputs, random_targets

    targets = random_targets([6, 5], seed=3)
    outputs = random_outputs(2, seed=4, k=2)
    g = torch.Generator().manual_seed(5)
    for key in ("sigma_2", "kappa_u", "kappa_v"):
        outputs[key] = torch.randn(2, C, S, S, generator=g).requires_grad_()
    plain = make_loss()(dict(outputs), targets)
    losses = make_loss(uv_confidence="indep_aniso")(outputs, targets)
    assert set(losses) == {"loss_densepose_UV", "loss_densepose_I", "loss_densepose_S"}
    torch.testing.assert_close(losses["loss_densepose_I"], plain["loss_densepose_I"])
    losses["loss_densepose_UV"].backward()
    assert outputs["sigma_2"].grad.abs().sum() > 0 and outputs["kappa_u"].grad.abs().sum() > 0
    with pytest.raises(KeyError, match="kappa_u"):
        make_loss(uv_confidence="indep_aniso")(
            {k: v for k, v in outputs.items() if k != "kappa_u"}, targets
        )


def test_chart_loss_refuses_cse_outputs_with_a_clear_error():
    from test_losses import make_loss, random_targets

    outputs = {"coarse_segm": torch.zeros(2, 2, 16, 16), "embedding": torch.zeros(2, 16, 16, 16)}
    with pytest.raises(KeyError, match="CSE models for inference only"):
        make_loss()(outputs, random_targets([3, 2], seed=0))
