"""fnl-detector: Assembles DensePose detectors (Mobile Parsing R-CNN and friends) from pydantic specs; training, inference, export and the fnl CLI commands."""
