"""timm CNNs as FnL backbones: ``forward(x) -> {"c2": ..., "c3": ..., ...}`` ordered by stride.

Construction order (each step is a small function below):

1. check the model name; create a parameter-free "meta" copy of the full classification model
   (its feature list and state-dict keys validate the options and the weights file);
2. create the feature extractor: timm ``features_only`` (``out_indices``, optional
   ``feature_location="expansion"``) or the classification model cut after the last requested
   stage (``stages``), pruning stages that are not used;
3. load local weights, set BatchNorm eps/momentum ('tf_' defaults), convert the norms;
4. one dry run on a 64-px input checks the channels and finds parameters that never reach an
   output (e.g. the last ``conv_pwl`` of an expansion-feature model);
5. freeze the stem and the first stages.
"""

from __future__ import annotations

import difflib
import inspect
import math
from collections.abc import Sequence
from pathlib import PurePath
from typing import Any

import timm
import torch
from timm.models import split_model_name_tag
from timm.models.efficientnet import EfficientNetFeatures
from timm.models.mobilenetv3 import MobileNetV3Features
from torch import nn

from fnl_backbones.freeze import default_freeze_at, freeze_stages, stage_layout, stage_of
from fnl_backbones.norm import convert_norm, set_batch_norm_hyperparams
from fnl_backbones.weights import load_backbone_weights
from fnl_core.spec import ShapeSpec

#: BatchNorm defaults of TensorFlow-ported ('tf_') timm models (PyTorch momentum convention).
TF_BN_EPS = 1e-3
TF_BN_MOMENTUM = 0.01
_DRY_RUN_SIZE = 64


def check_model_name(model_name: str) -> str:
    """Return the architecture name of ``model_name``; unknown names list similar timm models."""
    arch, _ = split_model_name_tag(model_name)
    if timm.is_model(arch):
        return arch
    close = difflib.get_close_matches(arch, timm.list_models(), n=8, cutoff=0.6)
    hint = f"; similar timm models: {', '.join(close)}" if close else ""
    raise ValueError(
        f"backbone 'timm': unknown timm model {model_name!r}{hint} "
        "(timm.list_models('pattern*') lists the names)"
    )


def is_tf_model(model_name: str) -> bool:
    """Models ported from TensorFlow ('tf_' prefix) use BatchNorm eps 1e-3 / momentum 0.01."""
    return split_model_name_tag(model_name)[0].startswith("tf_")


def _meta_model(model_name: str) -> nn.Module | None:
    """The full classification model on the meta device (no memory, no init cost), if possible."""
    try:
        with torch.device("meta"):
            return timm.create_model(model_name, pretrained=False)
    except Exception:
        return None


def _feature_dicts(info: Any) -> list[dict]:
    """timm's full feature list from a model's ``feature_info`` (list or ``FeatureInfo``)."""
    if info is None:
        return []
    if hasattr(info, "info"):
        return list(info.info)
    return list(info)


def _describe_features(infos: list[dict]) -> str:
    return ", ".join(
        f"{i}: stride {d.get('reduction')} ch {d.get('num_chs')} ({d.get('module')})"
        for i, d in enumerate(infos)
    )


def _level_name(stride: int, where: str) -> str:
    level = round(math.log2(stride)) if stride > 0 else -1
    if stride <= 0 or 2**level != stride:
        raise ValueError(f"backbone 'timm': {where} has stride {stride}, not a power of two")
    return f"c{level}"


def _create_feature_model(
    model_name: str,
    out_indices: list[int],
    feature_location: str,
    pretrained: bool,
    full_info: list[dict],
) -> tuple[nn.Module, list[dict]]:
    """timm ``features_only`` model and the feature dicts it returns, in order."""
    if full_info and max(out_indices) >= len(full_info):
        raise ValueError(
            f"backbone 'timm': out_indices {out_indices} out of range for {model_name!r}, "
            f"which has {len(full_info)} features ({_describe_features(full_info)})"
        )
    kwargs: dict[str, Any] = dict(features_only=True, out_indices=tuple(out_indices))
    if feature_location:
        kwargs["feature_location"] = feature_location
    try:
        body = timm.create_model(model_name, pretrained=pretrained, **kwargs)
    except TypeError as exc:
        if feature_location and "feature_location" in str(exc):
            raise ValueError(
                f"backbone 'timm': {model_name!r} does not support "
                f"feature_location={feature_location!r} (timm's EfficientNet and MobileNetV3 "
                "families do)"
            ) from exc
        raise
    except IndexError as exc:
        raise ValueError(
            f"backbone 'timm': out_indices {out_indices} out of range for {model_name!r}"
        ) from exc
    return body, list(body.feature_info.get_dicts())


def _prune_feature_model(body: nn.Module, features: list[dict]) -> None:
    """Drop the ``blocks`` stages after the last one a feature is taken from.

    Only for timm's EfficientNet/MobileNetV3 feature classes, whose forward runs every stage of
    ``blocks``; timm's generic feature wrappers already stop at the last used module.
    """
    if not isinstance(body, (EfficientNetFeatures, MobileNetV3Features)):
        return
    layout = stage_layout(body)
    if layout is None:
        return
    used = [stage_of(layout, str(f["module"])) for f in features]
    last = max((u for u in used if u is not None), default=-1)
    body.blocks = body.blocks[: last + 1]


def _create_stage_model(
    model_name: str, stages: list[int], pretrained: bool, prune: bool
) -> tuple[nn.Module, list[int], list[int]]:
    """Classification model whose stage outputs are taken; returns (model, indices, strides)."""
    body = timm.create_model(model_name, pretrained=pretrained)
    method = getattr(body, "forward_intermediates", None)
    blocks = getattr(body, "blocks", None)
    if (
        method is None
        or "extra_blocks" not in inspect.signature(method).parameters
        or not isinstance(blocks, nn.Sequential)
    ):
        raise ValueError(
            f"backbone 'timm': stages= needs a model with per-stage `blocks` (timm's "
            f"EfficientNet/MobileNetV3 families); {model_name!r} is a {type(body).__name__}: "
            "use out_indices instead"
        )
    if max(stages) >= len(blocks):
        raise ValueError(
            f"backbone 'timm': stages {stages} out of range for {model_name!r}, which has "
            f"{len(blocks)} stages (0..{len(blocks) - 1})"
        )
    full_info = _feature_dicts(getattr(body, "feature_info", None))
    strides = []
    for s in stages:
        # a stage's stride is that of the next listed stage end (timm numbers blocks[i] as i+1)
        ends = [d for d in full_info if int(d.get("stage", -1)) >= s + 1]
        if not ends:
            raise ValueError(f"backbone 'timm': cannot find the stride of stage {s}")
        strides.append(int(min(ends, key=lambda d: int(d["stage"]))["reduction"]))
    indices = [s + 1 for s in stages]  # forward_intermediates: 0 = stem, i = blocks[i - 1]
    if prune:
        body.prune_intermediate_layers(indices, prune_head=True, extra_blocks=True)
    return body, indices, strides


def _stride_in_1x1(body: nn.Module, model_name: str) -> None:
    """Downsample in each strided bottleneck's first 1x1 conv, not its 3x3 (detectron2 MSRA)."""
    from timm.models.resnet import Bottleneck

    blocks = [m for m in body.modules() if isinstance(m, Bottleneck)]
    if not blocks:
        raise ValueError(
            f"backbone 'timm': stride_in_1x1 needs a ResNet with bottleneck blocks; "
            f"{model_name!r} has none"
        )
    for block in blocks:
        if block.conv2.stride != (1, 1):
            block.conv1.stride, block.conv2.stride = block.conv2.stride, (1, 1)


class TimmBackbone(nn.Module):
    """A timm CNN returning features named ``c<log2(stride)>``, ordered by stride.

    Args:
        model_name: timm model name (optionally with a weight tag).
        out_indices: indices into timm's ``feature_info`` (``features_only``), used when
            ``stages`` is None.
        feature_location: ``""`` (timm's default) or ``"expansion"``.
        stages: 0-based stages of the model's ``blocks`` whose outputs are returned.
        norm: ``"frozen_bn"``, ``"bn"`` or ``"sync_bn"``.
        freeze_at: freeze the stem and the first N stages (None: the reference rule, see
            :func:`fnl_backbones.freeze.default_freeze_at`; 0: nothing).
        pretrained: False, True (timm's weights) or a path to a local weights file.
        bn_eps, bn_momentum: BatchNorm overrides (None: 'tf_' defaults or timm's).
        prune: drop stages after the last used one and the classifier head.
        stride_in_1x1: move each ResNet bottleneck's stride from its 3x3 to its first 1x1
            conv (detectron2's MSRA ResNets).

    The timm module is ``self.body``: state-dict keys are timm's under ``body.``.

    Example::

        >>> bb = TimmBackbone(model_name="spnasnet_100", feature_location="expansion")
        >>> {k: (s.channels, s.stride) for k, s in bb.output_shape().items()}
        {'c2': (72, 4), 'c3': (120, 8), 'c4': (288, 16), 'c5': (1152, 32)}
    """

    def __init__(
        self,
        *,
        model_name: str,
        out_indices: Sequence[int] = (1, 2, 3, 4),
        feature_location: str = "",
        stages: Sequence[int] | None = None,
        norm: str = "frozen_bn",
        freeze_at: int | None = None,
        pretrained: bool | str | PurePath = False,
        bn_eps: float | None = None,
        bn_momentum: float | None = None,
        prune: bool = True,
        stride_in_1x1: bool = False,
    ) -> None:
        super().__init__()
        check_model_name(model_name)
        if feature_location not in ("", "expansion"):
            raise ValueError(
                f"backbone 'timm': feature_location must be '' or 'expansion', "
                f"got {feature_location!r}"
            )
        self.model_name = model_name
        meta = _meta_model(model_name)
        full_info = _feature_dicts(getattr(meta, "feature_info", None))
        use_timm_weights = pretrained is True
        self._stage_indices: list[int] | None = None
        declared: list[int] | None
        if stages is not None:
            stages = sorted(stages)
            body, self._stage_indices, strides = _create_stage_model(
                model_name, stages, use_timm_weights, prune
            )
            where = [f"stage {s}" for s in stages]
            declared = None
        else:
            out = sorted(out_indices)
            body, features = _create_feature_model(
                model_name, out, feature_location, use_timm_weights, full_info
            )
            if prune:
                _prune_feature_model(body, features)
            strides = [int(f["reduction"]) for f in features]
            declared = [int(f["num_chs"]) for f in features]
            where = [f"feature {i} ({f['module']})" for i, f in zip(out, features)]
            full_info = _feature_dicts(body.feature_info)
        names = [_level_name(s, w) for s, w in zip(strides, where)]
        if len(set(names)) != len(names):
            raise ValueError(
                f"backbone 'timm': two selected features of {model_name!r} share a stride "
                f"({', '.join(f'{w}: stride {s}' for w, s in zip(where, strides))}); "
                "select one feature per stride"
            )
        self.body = body
        self._names = names

        if isinstance(pretrained, (str, PurePath)):
            known = set(meta.state_dict()) if meta is not None else None
            load_backbone_weights(body, pretrained, model_name=model_name, known_keys=known)
        tf = is_tf_model(model_name)
        set_batch_norm_hyperparams(
            body,
            eps=bn_eps if bn_eps is not None else (TF_BN_EPS if tf else None),
            momentum=bn_momentum if bn_momentum is not None else (TF_BN_MOMENTUM if tf else None),
        )
        self.body = convert_norm(body, norm)
        if stride_in_1x1:
            _stride_in_1x1(self.body, model_name)

        channels, unused = self._dry_run()
        if declared is not None and channels != declared:
            raise ValueError(
                f"backbone 'timm': {model_name!r} declares channels {declared} in its "
                f"feature_info but returns {channels}"
            )
        self._shapes = {n: ShapeSpec(c, s) for n, c, s in zip(names, channels, strides)}

        layout = stage_layout(self.body)
        if freeze_at is None:
            freeze_at = default_freeze_at(layout, full_info)
            if layout is not None:
                freeze_at = min(freeze_at, len(layout.stages))
        self.freeze_at = freeze_at
        self.frozen_parts = freeze_stages(self.body, layout, freeze_at)
        self._unused = [n for n in unused if self.body.get_parameter(n).requires_grad]

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self._stage_indices is not None:
            feats = self.body.forward_intermediates(
                x,
                indices=self._stage_indices,
                intermediates_only=True,
                extra_blocks=True,
                stop_early=True,
            )
        else:
            feats = self.body(x)
        return list(feats)

    def _dry_run(self) -> tuple[list[int], list[str]]:
        """Channels of each output, and names of parameters that reach no output."""
        was_training = self.training
        self.eval()
        params = [(n, p) for n, p in self.body.named_parameters() if p.requires_grad]
        unused: list[str] = []  # stays empty when autograd is off (built in inference mode)
        try:
            with torch.enable_grad():
                feats = self._features(torch.zeros(1, 3, _DRY_RUN_SIZE, _DRY_RUN_SIZE))
                total = sum(f.float().sum() for f in feats)
                if params and isinstance(total, torch.Tensor) and total.requires_grad:
                    grads = torch.autograd.grad(total, [p for _, p in params], allow_unused=True)
                    unused = [n for (n, _), g in zip(params, grads) if g is None]
        finally:
            self.train(was_training)
        return [int(f.shape[1]) for f in feats], unused

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self._features(x)
        if self._unused and self.training and torch.is_grad_enabled():
            # keep parameters that feed no output in the graph (DDP); numerically a no-op
            touch = sum(self.body.get_parameter(n).reshape(-1)[0] for n in self._unused)
            feats[-1] = feats[-1] + 0.0 * touch
        return dict(zip(self._names, feats))

    def output_shape(self) -> dict[str, ShapeSpec]:
        """``{name: ShapeSpec(channels, stride)}`` of the outputs, ordered by stride."""
        return dict(self._shapes)

    @property
    def unused_parameters(self) -> list[str]:
        """Trainable parameters (names under ``body``) that no output depends on."""
        return list(self._unused)


__all__ = ["TF_BN_EPS", "TF_BN_MOMENTUM", "TimmBackbone", "check_model_name", "is_tf_model"]
