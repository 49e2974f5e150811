"""Numbers as people read them in summaries, tables and reports: one formatter per unit."""

from __future__ import annotations

import math

# What a distance that is infinite means here: the frame has no pose (metrics.frame_mtre).
NO_POSE = "no pose"


def mm(x: float | None, unit: bool = True) -> str:
    """A distance: '1.12 mm' (or '1.12' without the unit), 'no pose' for inf, '-' when unknown."""
    if x is None or math.isnan(x):
        return "-"
    if math.isinf(x):
        return NO_POSE
    return f"{x:.2f} mm" if unit else f"{x:.2f}"


def ms(x: float | None) -> str:
    """A duration: '1694 ms', '-' when unknown."""
    return "-" if x is None or not math.isfinite(x) else f"{x:.0f} ms"
