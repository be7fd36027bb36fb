"""BiFPN as used by Mobile Parsing R-CNN (B): one bidirectional layer, fast normalised fusion.

Building blocks (docs/components.md, ``bifpn``):

* lateral ``l{l}``: conv 1×1 ``C_l → C`` with bias;
* conv block (``p{l}_tr``, ``p{l}_out``, ``down_p{l}``): depth-wise 3×3 → point-wise 1×1
  (both without bias) → BatchNorm → ReLU; the ``down_*`` blocks use stride 2;
* ``fuse_*``: ``Σ relu(w_i)·x_i / (Σ relu(w_i) + eps)`` with learnable ``w`` (init 1);
* up-sampling: nearest (or bilinear) resize to the finer map's size (= ×2 on padded inputs).

With levels ``a < … < z`` (``p2..p5`` for the paper) the graph is::

    t_z        = L_z
    t_l        = C(F(L_l, up(t_{l+1})))                 for a < l < z  (top-down, "p{l}_tr")
    p_a        = C(F(L_a, up(t_{a+1})))
    p_l        = C(F(L_l, t_l, down(p_{l-1})))          for a < l < z  (bottom-up)
    p_z        = C(F(L_z, down(p_{z-1})))
    p_{z+1}    = max_pool(p_z, kernel 1, stride 2)

Parameter names equal DensePoseFnL's (``l2``, ``p4_tr.0.0``, ``fuse_p4_out.weight``...), so its
checkpoints load directly. Extra layers (``num_layers > 1``) repeat the graph on the previous
layer's outputs without laterals, under ``repeats.{i}.``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fnl_core.spec import ShapeSpec


class FastNormalizedFusion(nn.Module):
    """Weighted average of ``n`` same-shaped maps with ReLU'd learnable weights (EfficientDet)."""

    def __init__(self, num_inputs: int, eps: float = 1e-4) -> None:
        super().__init__()
        self.num_inputs = num_inputs
        self.weight = nn.Parameter(torch.ones(num_inputs))
        self.register_buffer("eps", torch.tensor(eps))

    def forward(self, inputs: list[Tensor]) -> Tensor:
        if len(inputs) != self.num_inputs:
            raise ValueError(f"fusion expects {self.num_inputs} inputs, got {len(inputs)}")
        weight = F.relu(self.weight)
        total = inputs[0] * weight[0]
        for i in range(1, self.num_inputs):
            total = total + inputs[i] * weight[i]
        return total / (weight.sum() + self.eps)


def _norm(kind: str, channels: int, momentum: float, eps: float) -> nn.Module:
    if kind == "bn":
        return nn.BatchNorm2d(channels, eps=eps, momentum=momentum)
    if kind == "sync_bn":
        return nn.SyncBatchNorm(channels, eps=eps, momentum=momentum)
    raise ValueError(f"BiFPN: unknown norm {kind!r}; expected 'bn' or 'sync_bn'")


def conv_block(
    channels: int, *, stride: int = 1, norm: str = "bn", momentum: float = 0.03, eps: float = 1e-5
) -> nn.Sequential:
    """Depth-wise separable 3×3 conv → norm → ReLU, laid out as ``((dw, pw), norm, relu)``."""
    separable = nn.Sequential(
        nn.Conv2d(channels, channels, 3, stride=stride, padding=1, groups=channels, bias=False),
        nn.Conv2d(channels, channels, 1, bias=False),
    )
    return nn.Sequential(separable, _norm(norm, channels, momentum, eps), nn.ReLU(inplace=True))


class BiFPNLayer(nn.Module):
    """One bidirectional pass over ``levels`` (all maps already have ``channels`` channels)."""

    def __init__(
        self,
        *,
        levels: list[int],
        channels: int,
        upsample: str = "nearest",
        norm: str = "bn",
        bn_momentum: float = 0.03,
        bn_eps: float = 1e-5,
        fusion_eps: float = 1e-4,
    ) -> None:
        super().__init__()
        if len(levels) < 2:
            raise ValueError(f"BiFPN needs at least 2 input levels, got {levels}")
        if upsample not in ("nearest", "bilinear"):
            raise ValueError(f"BiFPN: unknown upsample mode {upsample!r}")
        self.levels = list(levels)
        self.upsample = upsample

        def block(stride: int = 1) -> nn.Sequential:
            return conv_block(channels, stride=stride, norm=norm, momentum=bn_momentum, eps=bn_eps)

        inner, bottom, top = self.levels[1:-1], self.levels[0], self.levels[-1]
        for lv in reversed(inner):
            self.add_module(f"p{lv}_tr", block())
            self.add_module(f"fuse_p{lv}_tr", FastNormalizedFusion(2, fusion_eps))
        for lv in self.levels[:-1]:
            self.add_module(f"down_p{lv}", block(stride=2))
        for lv in self.levels:
            n_in = 2 if lv in (bottom, top) else 3
            self.add_module(f"fuse_p{lv}_out", FastNormalizedFusion(n_in, fusion_eps))
            self.add_module(f"p{lv}_out", block())

    def _up(self, x: Tensor, like: Tensor) -> Tensor:
        if self.upsample == "nearest":
            return F.interpolate(x, size=like.shape[-2:], mode="nearest")
        return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)

    def _node(self, name: str, inputs: list[Tensor]) -> Tensor:
        return getattr(self, name)(getattr(self, f"fuse_{name}")(inputs))

    def forward(self, inputs: list[Tensor]) -> list[Tensor]:
        """``inputs``: one map per level, finest first; returns the outputs in the same order."""
        lat = dict(zip(self.levels, inputs))
        inner, bottom = self.levels[1:-1], self.levels[0]
        top_down = {self.levels[-1]: lat[self.levels[-1]]}
        coarser = lat[self.levels[-1]]
        for lv in reversed(inner):
            coarser = self._node(f"p{lv}_tr", [lat[lv], self._up(coarser, lat[lv])])
            top_down[lv] = coarser
        outs = [self._node(f"p{bottom}_out", [lat[bottom], self._up(coarser, lat[bottom])])]
        for lv in self.levels[1:]:
            down = getattr(self, f"down_p{lv - 1}")(outs[-1])
            if lv in inner:
                outs.append(self._node(f"p{lv}_out", [lat[lv], top_down[lv], down]))
            else:
                outs.append(self._node(f"p{lv}_out", [lat[lv], down]))
        return outs


class BiFPN(BiFPNLayer):
    """Laterals ``l{l}`` + the first BiFPN layer (its blocks at the top level, as in
    DensePoseFnL) + ``num_layers - 1`` repeated layers + a max-pool level on top.

    Args:
        in_features: names of the input features, ordered by stride (finest first).
        in_channels: channel count of each input feature.
        in_strides: stride of each input feature; consecutive strides must double.
        out_channels: channels of every output level (paper B: 64).
        num_layers: number of stacked BiFPN layers (paper: 1).
        upsample: ``"nearest"`` (paper) or ``"bilinear"`` (align_corners=False).
        norm: ``"bn"`` or ``"sync_bn"`` for the conv blocks.

    ``forward(features)`` returns ``{"p{l}": Tensor[B, out_channels, ...]}`` for each input
    level plus ``p{top+1}``, finest first.
    """

    def __init__(
        self,
        *,
        in_features: list[str],
        in_channels: list[int],
        in_strides: list[int],
        out_channels: int = 64,
        num_layers: int = 1,
        upsample: str = "nearest",
        norm: str = "bn",
        bn_momentum: float = 0.03,
        bn_eps: float = 1e-5,
        fusion_eps: float = 1e-4,
    ) -> None:
        if not (len(in_features) == len(in_channels) == len(in_strides)):
            raise ValueError("BiFPN: in_features, in_channels and in_strides need equal lengths")
        if num_layers < 1:
            raise ValueError(f"BiFPN: num_layers must be >= 1, got {num_layers}")
        levels = [int(s).bit_length() - 1 for s in in_strides]
        layer_kwargs = dict(
            levels=levels,
            channels=out_channels,
            upsample=upsample,
            norm=norm,
            bn_momentum=bn_momentum,
            bn_eps=bn_eps,
            fusion_eps=fusion_eps,
        )
        super().__init__(**layer_kwargs)
        self.in_features = list(in_features)
        self.out_channels = out_channels
        for lv, cin in zip(levels, in_channels):
            self.add_module(f"l{lv}", nn.Conv2d(cin, out_channels, kernel_size=1))
        self.repeats = nn.ModuleList(BiFPNLayer(**layer_kwargs) for _ in range(num_layers - 1))
        self._out_strides = {f"p{lv}": 2**lv for lv in [*levels, levels[-1] + 1]}
        self.size_divisibility = int(in_strides[-1])

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {n: ShapeSpec(self.out_channels, s) for n, s in self._out_strides.items()}

    def forward(self, features: dict[str, Tensor]) -> dict[str, Tensor]:  # type: ignore[override]
        laterals = [
            getattr(self, f"l{lv}")(features[name])
            for lv, name in zip(self.levels, self.in_features)
        ]
        outs = super().forward(laterals)
        for layer in self.repeats:
            outs = layer(outs)
        outs.append(F.max_pool2d(outs[-1], kernel_size=1, stride=2))
        return dict(zip(self._out_strides, outs))


__all__ = ["BiFPN", "BiFPNLayer", "FastNormalizedFusion", "conv_block"]
