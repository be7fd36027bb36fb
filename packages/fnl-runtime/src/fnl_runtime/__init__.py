"""fnl-runtime: FnL's exported DensePose graphs on onnxruntime, without torch.

The names below load on first use, so that ``fnl --help`` (which imports the ``fnl run``
command module of this package) stays free of numpy and onnxruntime.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Runtime", "__version__", "load_manifest", "to_original_frame"]


def __getattr__(name: str) -> Any:
    if name in ("Runtime", "load_manifest", "to_original_frame"):
        from fnl_runtime import runtime

        return getattr(runtime, name)
    raise AttributeError(f"module 'fnl_runtime' has no attribute {name!r}")
