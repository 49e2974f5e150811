"""Small simulated bags for the replay tests: a few nanodrr frames of the bundled CT (fast),
with a frame that cannot be decoded among them."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from rayemb_ros.io.bags import Frame, write_bag
from rayemb_ros.imaging.simulate import plan, simulate_frames

SIZE = 128
SEED = 5


def good_frames(volume, n: int) -> list[Frame]:
    shots = plan(volume, n, SEED, SIZE, SIZE)
    return list(simulate_frames(volume, shots, SEED, renderer="nanodrr"))


def orbit_frames(volume, n: int) -> list[Frame]:
    """``n`` frames of a C-arm orbiting at 15 fps."""
    shots = plan(volume, n, SEED, SIZE, SIZE, trajectory="orbit", fps=15.0)
    return list(simulate_frames(volume, shots, SEED, renderer="nanodrr", fps=15.0))


def with_constant_frame(frames: list[Frame], at: int) -> list[Frame]:
    """The frames with a constant image (rejected on decoding) inserted at ``at``, all stamps
    kept in order and distinct."""
    bad = replace(frames[at], image=np.full((SIZE, SIZE), 3.0, np.float32))
    out = frames[:at] + [bad] + frames[at:]
    period = frames[1].stamp_ns - frames[0].stamp_ns if len(frames) > 1 else 10**8
    return [replace(f, stamp_ns=frames[0].stamp_ns + i * period) for i, f in enumerate(out)]


def bag(path: Path, frames: list[Frame], **kwargs) -> Path:
    write_bag(path, frames, **kwargs)
    return path
