"""Process settings that must be made before torch is imported.

libgomp (the OpenMP runtime of torch's CPU build) lets idle worker threads spin for a while
between parallel regions (``OMP_WAIT_POLICY=ACTIVE`` behaviour). When another process holds
one of the cores, a spinning thread competes with it and every parallel region waits for the
descheduled thread: measured on the shared 2-core machine (docs/inference.md), a 2-thread
Mobile Parsing R-CNN pass was several times slower. ``PASSIVE`` makes idle threads sleep.
The variable is read once, when libgomp loads, so it has to be set before ``import torch``.
"""

from __future__ import annotations

import os
import sys


def prefer_passive_omp_wait() -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless the user set it or torch is already imported.

    Returns whether the policy is PASSIVE for this process from now on.
    """
    if "OMP_WAIT_POLICY" in os.environ:
        return os.environ["OMP_WAIT_POLICY"].upper() == "PASSIVE"
    if "torch" in sys.modules:
        return False
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True


__all__ = ["prefer_passive_omp_wait"]
