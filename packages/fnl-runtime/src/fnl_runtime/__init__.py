"""fnl-runtime: FnL's exported DensePose graphs on onnxruntime, without torch."""

from fnl_runtime.runtime import Runtime, load_manifest, to_original_frame

__version__ = "0.1.0"
__all__ = ["Runtime", "__version__", "load_manifest", "to_original_frame"]
