"""Continuous C-arm motion for live fluoroscopy: consecutive poses of one sequence, sampled at
its frame rate, as a C-arm streams them in surgery.

* ``orbit``: a steady rotation about the patient's long axis (LAO/RAO) at up to
  MAX_ROTATION_DEG_S, centred on a view inside the clinical range;
* ``wigwag``: rocking back and forth about the same axis, +-5-15 degrees, its peak speed up
  to MAX_ROTATION_DEG_S;
* ``table``: the C-arm held, the table sliding the patient along his long axis at up to
  MAX_TABLE_MM_S;
* ``still``: the C-arm held, the patient breathing (a few mm, mostly front-back, a 3-5 s
  period) with a little jitter.

Speeds are capped so that a sequence stays inside the pose range the encoder's templates
cover (``poses.PoseRange``): an orbit of 100 frames at 15 fps turns at most 2 x 30 degrees.
Poses are T_ct_source (camera-to-world, mm), the CT in RAS+ (+Z towards the head).
"""

from __future__ import annotations

import numpy as np
from jaxtyping import Float

from rayemb_ros.geometry.poses import PoseRange, carm_pose

TRAJECTORIES = ("orbit", "wigwag", "table", "still")
MAX_ROTATION_DEG_S = 15.0  # orbit speed, and a wigwag's peak speed
MAX_TABLE_MM_S = 20.0
MAX_TABLE_TRAVEL_MM = 100.0  # a slide over a sequence stays over the CT's middle
BREATHING_MM = (1.0, 3.0)  # amplitude range, front-back; half of it head-foot
BREATHING_PERIOD_S = (3.0, 5.0)
JITTER_MM = 0.2  # per frame, each axis (standard deviation)


def trajectory_poses(
    rng: np.random.Generator, kind: str, n: int, fps: float, center: Float[np.ndarray, "3"],
    pose_range: PoseRange = PoseRange(),
) -> Float[np.ndarray, "n 4 4"]:
    """``n`` consecutive poses ``1 / fps`` s apart along a motion of ``kind`` (TRAJECTORIES),
    around a start drawn as ``poses.sample_poses`` draws a view."""
    if kind not in TRAJECTORIES:
        raise ValueError(f"trajectory must be one of {TRAJECTORIES}, got {kind!r}")
    if n < 1 or not fps > 0:
        raise ValueError(f"a trajectory needs n >= 1 frames and fps > 0, got {n} and {fps}")
    r = pose_range
    t = np.arange(n) / fps
    duration = max(t[-1], 1e-9)
    iso = np.asarray(center, dtype=np.float64) + rng.uniform(-r.iso_offset_mm, r.iso_offset_mm, 3)
    cran, roll = rng.uniform(-r.cran_deg, r.cran_deg), rng.uniform(-r.roll_deg, r.roll_deg)
    sid = rng.uniform(*r.sid_mm)
    lao = np.full(n, rng.uniform(-r.lao_deg, r.lao_deg))
    isos = np.repeat(iso[None], n, axis=0)
    if kind == "orbit":
        rate = min(rng.uniform(5.0, MAX_ROTATION_DEG_S), 2 * r.lao_deg / duration) * rng.choice([-1.0, 1.0])
        sweep = abs(rate) * duration
        middle = rng.uniform(-(r.lao_deg - sweep / 2), r.lao_deg - sweep / 2)
        lao = middle + rate * (t - duration / 2)
    elif kind == "wigwag":
        amplitude = rng.uniform(5.0, 15.0)
        # peak speed 2 pi A / period, at most MAX_ROTATION_DEG_S
        period = 2 * np.pi * amplitude / MAX_ROTATION_DEG_S * rng.uniform(1.0, 1.5)
        middle = rng.uniform(-(r.lao_deg - amplitude), r.lao_deg - amplitude)
        lao = middle + amplitude * np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi))
    elif kind == "table":
        speed = min(rng.uniform(5.0, MAX_TABLE_MM_S), MAX_TABLE_TRAVEL_MM / duration) * rng.choice([-1.0, 1.0])
        isos[:, 2] += speed * (t - duration / 2)
    else:  # still: breathing moves the patient under a held C-arm
        amplitude, period = rng.uniform(*BREATHING_MM), rng.uniform(*BREATHING_PERIOD_S)
        breath = amplitude * np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi))
        isos[:, 1] += breath
        isos[:, 2] += 0.5 * breath
        isos += rng.normal(0.0, JITTER_MM, isos.shape)
    return np.stack([carm_pose(isos[i], lao[i], cran, roll, sid) for i in range(n)])
