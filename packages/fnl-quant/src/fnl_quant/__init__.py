"""fnl-quant: quantization-aware training and post-training quantization for FnL detectors."""
