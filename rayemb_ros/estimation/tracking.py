"""Tracking a moving C-arm: the last trusted pose as the prior of the next frame. No ROS.

A frame registered from scratch searches every landmark over the whole image and refines
from PnP's pose (seconds on a CPU). Between frames of a live sequence the C-arm moves a
little, so the last trusted pose predicts where each landmark shows: the estimator then
searches small windows about those predictions and refines from near the answer
(``Estimator.estimate(..., prior=...)``). The prior only says where to look: every frame
still passes the same trust gates, and a frame the prior does not fit (a jump, another view,
a gap in time) falls back to the full path by itself (``Estimate.mode``: ``prior`` or
``full``, with ``Estimate.fallback`` saying why).

A prior can also come from outside (the C-arm's angle readout, the robot's kinematics, a few
degrees and centimetres off): :meth:`Tracker.seed` makes it the prior of the frames that come
while no trusted pose is recent.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np
from jaxtyping import Float

from rayemb_ros.estimation.result import Estimate
from rayemb_ros.geometry.poses import extrapolate_pose

# A prior older than this (s, by the frames' stamps) is not used: in 1 s a C-arm orbiting at
# 15 deg/s turns 15 deg, beyond what the landmark windows cover.
MAX_PRIOR_AGE_S = 1.0
# Landmarks are looked for within this many pixels (per 256 px of width) of their projection
# under the prior (~10 mm at the patient: a turn of ~5 deg about the patient beyond what the
# last motion predicts, for anatomy 100 mm from the isocentre). Twice this cost 111 ms
# instead of 23 ms per frame (2 CPU cores, 1200 landmarks).
PRIOR_WINDOW_PX = 12
# ... and about a pose from outside (the C-arm's angle readout, the robot's kinematics: a few
# degrees and centimetres off), within four times that.
OUTSIDE_PRIOR_WINDOW_PX = 48
# The prior is the last trusted pose carried on by the motion between it and the trusted pose
# before it (a C-arm orbiting at constant speed is then predicted exactly), but only over at
# most this many such intervals: a long gap would magnify that motion's noise.
MAX_EXTRAPOLATION = 3.0


@dataclass(frozen=True)
class Prior:
    """A pose the next frame is expected near (camera-to-world, mm), when it held, and where it
    came from (``last pose``: the last trusted estimate; ``pose_prior``: given from outside)."""

    T_ct_source: Float[np.ndarray, "4 4"]
    stamp_ns: int
    source: str = "last pose"
    window_px: int = PRIOR_WINDOW_PX  # how far from its predictions landmarks are looked for (per 256 px)
    # Whether refinement starts from the prior, in a few steps; else from the PnP pose of the
    # landmarks found near it, with the full schedule (a prior centimetres off is a worse start).
    warm_start: bool = True

    @classmethod
    def outside(cls, T_ct_source: Float[np.ndarray, "4 4"], stamp_ns: int) -> Prior:
        """A pose given from outside (``~/pose_prior``, a bag's prior topic): it only says where
        to look for the landmarks."""
        return cls(T_ct_source, stamp_ns, "pose_prior", OUTSIDE_PRIOR_WINDOW_PX, warm_start=False)


class Registers(Protocol):
    @property
    def scene(self) -> Any: ...  # its volume's centre: the pivot of the C-arm's motion

    def estimate(self, image: np.ndarray, K: np.ndarray, prior: Prior | None = None) -> Estimate: ...


class Tracker:
    """Registers the frames of one sequence in order, each with a prior while one is recent
    (``max_age_s``, by stamps): the last trusted pose, else the last pose from outside. Owns
    nothing but those poses."""

    def __init__(self, estimator: Registers, max_age_s: float = MAX_PRIOR_AGE_S):
        self._estimator = estimator
        self._max_age_ns = int(max_age_s * 1e9)
        self._last: Prior | None = None  # the last trusted estimate
        self._before: Prior | None = None  # the trusted estimate before it, when recent: the motion
        self._outside: Prior | None = None

    def reset(self) -> None:
        """Forget every pose (a new CT: poses of the old one mean nothing)."""
        self._last = self._before = self._outside = None

    def seed(self, prior: Prior) -> None:
        """A pose from outside: the prior of the frames that come while no trusted estimate is
        recent (it starts tracking; it never overrides what the frames themselves show)."""
        self._outside = prior

    def _recent(self, prior: Prior | None, stamp_ns: int) -> bool:
        return prior is not None and 0 <= stamp_ns - prior.stamp_ns <= self._max_age_ns

    def prior_for(self, stamp_ns: int) -> Prior | None:
        """The prior for a frame stamped ``stamp_ns``: the last trusted pose when it is at most
        ``max_age_s`` older (a frame older than it gets none: the stamps went back), carried on
        by the last motion between trusted poses when there is one (MAX_EXTRAPOLATION); else a
        recent pose from outside; else none."""
        last, before = self._last, self._before
        if not self._recent(last, stamp_ns):
            return self._outside if self._recent(self._outside, stamp_ns) else None
        if before is None or self._estimator.scene is None:
            return last
        ratio = (stamp_ns - last.stamp_ns) / (last.stamp_ns - before.stamp_ns)
        if ratio > MAX_EXTRAPOLATION:
            return last
        T = extrapolate_pose(before.T_ct_source, last.T_ct_source, ratio, self._estimator.scene.volume.center)
        return replace(last, T_ct_source=T, stamp_ns=stamp_ns)

    def estimate(self, image: Float[np.ndarray, "H W"], K: Float[np.ndarray, "3 3"], stamp_ns: int) -> Estimate:
        estimate = self._estimator.estimate(image, K, prior=self.prior_for(stamp_ns))
        if estimate.ok:
            # two trusted estimates, close in time, make a motion
            self._before = self._last if self._recent(self._last, stamp_ns) and self._last.stamp_ns < stamp_ns else None
            self._last = Prior(estimate.T_ct_source, stamp_ns)
        return estimate
