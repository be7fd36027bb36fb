"""fnl-quant: quantization-aware training and post-training quantization for FnL detectors.

Quantizers are registered under ``fnl.quantizers`` (``ptq``, ``qat``)::

    from fnl_core import registry
    quantizer = registry.get("fnl.quantizers", "ptq")(num_calibration_images=4).build()
    prepared = quantizer.prepare(model, example_inputs)
    quantizer.calibrate(prepared, inputs)
    int8_model = quantizer.convert(prepared)

This module imports nothing heavy; see :mod:`fnl_quant.quantizers` and :mod:`fnl_quant.artifact`.
"""
