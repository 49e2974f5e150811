"""What the estimator returns for one frame, and for one CT load. Plain data, no ROS."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from jaxtyping import Bool, Float


@dataclass
class Landmarks:
    """2D-3D correspondences of one frame (pixels of the input image, CT in mm)."""

    points_ct: Float[np.ndarray, "N 3"]
    uv: Float[np.ndarray, "N 2"]
    scores: Float[np.ndarray, "N"]
    inliers: Bool[np.ndarray, "N"]

    @classmethod
    def empty(cls) -> Landmarks:
        return cls(np.zeros((0, 3)), np.zeros((0, 2)), np.zeros(0), np.zeros(0, dtype=bool))

    def __len__(self) -> int:
        return len(self.uv)


@dataclass
class Estimate:
    """One frame's registration. ``ok`` is the trust decision: only ok poses are published.

    ``T_ct_source`` is camera-to-world (``carm_source`` -> ``ct``, mm); ``T_initial`` is the
    PnP pose before intensity refinement (equal to ``T_ct_source`` when refinement is off).
    """

    ok: bool
    reason: str
    T_ct_source: Float[np.ndarray, "4 4"] | None
    T_initial: Float[np.ndarray, "4 4"] | None
    landmarks: Landmarks
    num_inliers: int
    reprojection_error_px: float
    latency_ms: float
    stage_ms: dict[str, float] = field(default_factory=dict)
    # 6x6 of an accepted pose (geometry.covariance: position mm, rotation rad, ct axes)
    covariance: Float[np.ndarray, "6 6"] | None = None
    mode: str = "full"  # how the frame was registered: "full" (from scratch) or "prior"
    fallback: str = ""  # given a prior, why the frame was registered from scratch instead

    @classmethod
    def refused(cls, reason: str, landmarks: Landmarks | None = None, **kwargs) -> Estimate:
        return cls(
            ok=False,
            reason=reason,
            T_ct_source=kwargs.pop("T_ct_source", None),
            T_initial=kwargs.pop("T_initial", None),
            landmarks=landmarks if landmarks is not None else Landmarks.empty(),
            num_inliers=kwargs.pop("num_inliers", 0),
            reprojection_error_px=kwargs.pop("reprojection_error_px", float("nan")),
            latency_ms=kwargs.pop("latency_ms", 0.0),
            stage_ms=kwargs.pop("stage_ms", {}),
            mode=kwargs.pop("mode", "full"),
        )


@dataclass(frozen=True)
class PoseGrade:
    """What the published poses are good for, at the estimator's settings. Navigation-grade:
    the settings whose trust gates were validated on held-out frames (the shipped weights,
    full refinement, every gate at least as strict as its default; docs/results.md).
    Advisory-grade: anything else, with why. Every pose still passes the configured gates,
    but off the validated settings those gates have let poses > 10 mm off through."""

    reasons: tuple[str, ...] = ()

    @property
    def navigation(self) -> bool:
        return not self.reasons

    @property
    def name(self) -> str:
        return "navigation" if self.navigation else "advisory"

    def __str__(self) -> str:
        return f"{self.name}-grade" + (f" ({'; '.join(self.reasons)})" if self.reasons else "")


@dataclass
class VolumeInfo:
    """What loading a CT prepared."""

    path: str
    num_landmarks: int
    load_seconds: float
    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    weights: str = ""  # the encoder weights frames of this CT are registered with
    self_check: str = ""  # a prepared bundle's self-check verdict; "" for a plain CT
