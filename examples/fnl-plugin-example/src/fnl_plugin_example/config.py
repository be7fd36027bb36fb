"""Options of the ``example.tiny_convnet`` backbone (no torch import here)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from fnl_core import groups
from fnl_core.spec import ComponentConfig


class TinyConvNetConfig(ComponentConfig):
    """A plain strided conv net with four outputs at strides 4, 8, 16 and 32."""

    type: Literal["example.tiny_convnet"] = "example.tiny_convnet"
    group: ClassVar[str] = groups.BACKBONES
    width: int = Field(16, gt=0, description="channels of the stride-4 output; doubles per stage")

    def build(self):
        from fnl_plugin_example.model import TinyConvNet

        return TinyConvNet(width=self.width)
