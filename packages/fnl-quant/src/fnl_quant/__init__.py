"""fnl-quant: Quantization-aware training and post-training quantization recipes for FnL detectors."""
