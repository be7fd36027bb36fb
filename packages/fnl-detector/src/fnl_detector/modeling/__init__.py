"""The torch side of the detector: transform, anchors, RPN, poolers, RoI heads, the model."""
