"""DensePose heads: the R-CNN baseline conv stack and the DeepLab / Parsing R-CNN head.

Both map pooled RoI features ``Tensor[N, C, R, R]`` to ``Tensor[N, out_channels, R, R]``.
Parameter names follow detectron2 / DensePoseFnL (``body_conv_fcn{i}``, ``ASPP.convs.{b}``,
``ASPP.project``, ``NLBlock.{theta,phi,g,W}``) so their checkpoints map one-to-one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fnl_heads._init import msra_fill


class V1ConvXHead(nn.Module):
    """``num_convs`` × (conv k×k ``channels`` with bias + ReLU); baseline: 8 × 3×3 × 512."""

    def __init__(
        self, *, in_channels: int, num_convs: int = 8, channels: int = 512, kernel_size: int = 3
    ) -> None:
        super().__init__()
        self.num_convs = num_convs
        cin = in_channels
        for i in range(1, num_convs + 1):
            conv = nn.Conv2d(cin, channels, kernel_size, padding=kernel_size // 2)
            msra_fill(conv)
            self.add_module(f"body_conv_fcn{i}", conv)
            cin = channels
        self.out_channels = channels

    def forward(self, x: Tensor) -> Tensor:
        for i in range(1, self.num_convs + 1):
            x = F.relu(getattr(self, f"body_conv_fcn{i}")(x), inplace=True)
        return x


def _conv_norm_relu(
    cin: int, cout: int, kernel: int, dilation: int, norm: str, pool_first: bool = False
) -> nn.Sequential:
    """conv (bias only without norm) [→ GroupNorm(32)] → ReLU, optionally after a global pool."""
    layers: list[nn.Module] = [nn.AdaptiveAvgPool2d(1)] if pool_first else []
    pad = dilation * (kernel // 2)
    layers.append(nn.Conv2d(cin, cout, kernel, padding=pad, dilation=dilation, bias=not norm))
    if norm == "gn":
        layers.append(nn.GroupNorm(32, cout))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1×1, dilated 3×3s, image pooling; concat → 1×1 + ReLU.

    The pooling branch (avg-pool → 1×1 → ReLU) is resized back to R×R bilinearly (a broadcast;
    done as in the reference so that the outputs match it bit for bit). With ``norm="gn"``
    branch convs drop their bias and get GroupNorm(32), and the projection has no bias
    (detectron2's layout).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        channels: int,
        out_channels: int,
        dilations: list[int],
        norm: str = "",
    ) -> None:
        super().__init__()
        branches = [_conv_norm_relu(in_channels, channels, 1, 1, norm)]
        branches += [_conv_norm_relu(in_channels, channels, 3, d, norm) for d in dilations]
        branches.append(_conv_norm_relu(in_channels, channels, 1, 1, norm, pool_first=True))
        self.convs = nn.ModuleList(branches)
        n_cat = channels * len(branches)
        self.project = nn.Sequential(
            nn.Conv2d(n_cat, out_channels, kernel_size=1, bias=not norm), nn.ReLU(inplace=True)
        )

    def forward(self, x: Tensor) -> Tensor:
        outs = [branch(x) for branch in self.convs[:-1]]
        pooled = self.convs[-1](x)
        outs.append(F.interpolate(pooled, size=x.shape[-2:], mode="bilinear", align_corners=False))
        return self.project(torch.cat(outs, dim=1))


class NonLocalBlock(nn.Module):
    """Embedded-Gaussian non-local block (Wang et al. 2018) with 2×2 max-pool sub-sampling.

    ``z = W(y) + x`` where ``y = softmax(θ(x)ᵀ φ(x)) g(x)``; ``W`` = conv 1×1 → norm, the norm's
    affine values initialised to 0 so that the block starts as the identity.
    """

    def __init__(self, *, channels: int, norm: str = "gn") -> None:
        super().__init__()
        inter = max(channels // 2, 1)
        self.theta = nn.Conv2d(channels, inter, kernel_size=1)
        self.phi = nn.Sequential(nn.Conv2d(channels, inter, kernel_size=1), nn.MaxPool2d(2))
        self.g = nn.Sequential(nn.Conv2d(channels, inter, kernel_size=1), nn.MaxPool2d(2))
        if norm == "bn":
            w_norm: nn.Module = nn.BatchNorm2d(channels)
        elif norm == "gn":
            w_norm = nn.GroupNorm(32, channels)
        else:
            raise ValueError(f"NonLocalBlock: unknown norm {norm!r}; expected 'bn' or 'gn'")
        self.W = nn.Sequential(nn.Conv2d(inter, channels, kernel_size=1), w_norm)
        nn.init.zeros_(w_norm.weight)
        nn.init.zeros_(w_norm.bias)

    def forward(self, x: Tensor) -> Tensor:
        theta = self.theta(x)
        query = theta.flatten(2).transpose(1, 2)  # N × HW × inter
        key = self.phi(x).flatten(2)  # N × inter × HW/4
        value = self.g(x).flatten(2).transpose(1, 2)  # N × HW/4 × inter
        attention = torch.softmax(torch.bmm(query, key), dim=-1)
        y = torch.bmm(attention, value).transpose(1, 2).reshape(theta.shape)
        return self.W(y) + x


class ConvNorm(nn.Conv2d):
    """detectron2 ``Conv2d`` with a ``norm`` submodule: conv (no bias) → GroupNorm(32).

    Keeps detectron2's parameter names (``body_conv_fcn1.weight``, ``body_conv_fcn1.norm.*``).
    """

    def __init__(self, cin: int, cout: int, kernel_size: int) -> None:
        super().__init__(cin, cout, kernel_size, padding=kernel_size // 2, bias=False)
        self.norm = nn.GroupNorm(32, cout)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(super().forward(x))


class DeepLabHead(nn.Module):
    """ASPP [+ non-local] + ``num_convs`` × conv 3×3 (Parsing R-CNN / Mobile Parsing R-CNN).

    Args:
        in_channels: channels of the pooled RoI features.
        aspp_channels: width of each ASPP branch.
        project_channels: output of the ASPP projection (where the non-local block runs).
        channels: width of the stacked 3×3 convs (= ``out_channels``).
        num_convs: number of stacked convs.
        dilations: dilations of the ASPP 3×3 branches.
        non_local: insert a non-local block after the ASPP.
        non_local_norm: ``"bn"`` (FnL paper code) or ``"gn"`` (detectron2, FnL release).
        norm: ``""`` (FnL: convs with bias, no norm) or ``"gn"`` (detectron2 default; the
            stacked convs then carry their GroupNorm as ``body_conv_fcn{i}.norm``).

    Every conv is Kaiming-normal (fan_out) initialised with zero bias (FnL re-initialises the
    whole head this way).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        aspp_channels: int,
        project_channels: int,
        channels: int,
        num_convs: int = 4,
        dilations: tuple[int, ...] | list[int] = (6, 12, 18),
        non_local: bool = False,
        non_local_norm: str = "gn",
        norm: str = "",
    ) -> None:
        super().__init__()
        if norm not in ("", "gn"):
            raise ValueError(f"DeepLabHead: unknown norm {norm!r}; expected '' or 'gn'")
        self.ASPP = ASPP(
            in_channels=in_channels,
            channels=aspp_channels,
            out_channels=project_channels,
            dilations=list(dilations),
            norm=norm,
        )
        self.NLBlock = (
            NonLocalBlock(channels=project_channels, norm=non_local_norm) if non_local else None
        )
        self.num_convs = num_convs
        cin = project_channels
        for i in range(1, num_convs + 1):
            if norm == "gn":
                conv: nn.Module = ConvNorm(cin, channels, 3)
            else:
                conv = nn.Conv2d(cin, channels, kernel_size=3, padding=1)
            self.add_module(f"body_conv_fcn{i}", conv)
            cin = channels
        self.out_channels = channels if num_convs > 0 else project_channels
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                msra_fill(module)

    def forward(self, x: Tensor) -> Tensor:
        x = self.ASPP(x)
        if self.NLBlock is not None:
            x = self.NLBlock(x)
        for i in range(1, self.num_convs + 1):
            x = F.relu(getattr(self, f"body_conv_fcn{i}")(x), inplace=True)
        return x


__all__ = ["ASPP", "ConvNorm", "DeepLabHead", "NonLocalBlock", "V1ConvXHead"]
