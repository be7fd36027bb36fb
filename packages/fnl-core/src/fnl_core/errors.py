"""FnL's error types: every problem with user input is reported as one of these.

Commands catch :class:`FnLError` at the top level and print its message on one line, so a
message must name the file, field or component concerned and what was expected.
"""

from __future__ import annotations


class FnLError(Exception):
    """Base class of the errors FnL raises on purpose (as opposed to bugs)."""


class InputError(FnLError, ValueError):
    """A file or value given by the user cannot be used (unreadable, corrupt, out of range)."""


class ImageReadError(InputError):
    """An image file cannot be decoded into an RGB picture."""


class AnnotationError(InputError):
    """A ground-truth annotation file (COCO / DensePose-COCO JSON) breaks its format."""


class ResultsError(InputError):
    """A results file (DensePose-COCO detections JSON) breaks its format."""


class WeightsError(InputError):
    """A weights or checkpoint file is missing, truncated, corrupt or does not fit the model."""
