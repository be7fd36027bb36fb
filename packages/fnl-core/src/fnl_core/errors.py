"""FnL's error types: every problem with user input is reported as one of these.

Commands catch :class:`FnLError` at the top level and print its message on one line, so a
message must name the file, field or component concerned and what was expected.
"""

from __future__ import annotations

import re


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


def checkpoint_load_reason(exc: BaseException) -> str:
    """Why ``torch.load(..., weights_only=True)`` failed, in a few words, for a one-line
    message. torch's own text advises loading with ``weights_only=False`` (running the file's
    code); FnL never passes that advice on, so only the cause is kept: the pickled class that
    was refused, or the first line of the unpickler's error."""
    text = str(exc)
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found:
        return f"it holds a pickled Python object ({found.group(1)}), not only tensors"
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    lines = [line for line in lines if "weights_only" not in line and "torch.load" not in line]
    reason = lines[0] if lines else type(exc).__name__
    return f"{type(exc).__name__}: {reason[:160]}"
