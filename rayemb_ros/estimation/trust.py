"""The trust gates: whether a pose may be published, and what the published poses are good
for at the estimator's settings (the pose grade).

A wrong pose that looks right is the worst failure a surgical system can have: each gate
names the reason it refuses a pose, and the estimator publishes no pose a gate refused.
Pixel quantities are per ``REFERENCE_WIDTH`` (256) pixels of image width.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from jaxtyping import Float

from rayemb_ros.estimation.refine import DepthMatch, Refinement
from rayemb_ros.estimation.result import Landmarks, PoseGrade
from rayemb_ros.geometry.camera import depth, project
from rayemb_ros.learning.checkpoint import DEFAULT_CHECKPOINT
from rayemb_ros.params import Params


def landmark_residual_after_scale(T: Float[np.ndarray, "4 4"], K: Float[np.ndarray, "3 3"], landmarks: Landmarks) -> float:
    """Median distance (pixels) between the PnP inliers' estimated pixels and their
    projections under ``T``, once the projections are scaled about the principal point by the
    best-fitting factor. The encoder's peaks sit up to a few per cent towards the image
    centre (a scale that PnP reads as depth and refinement corrects), so a right refined pose
    leaves a residual of about the landmarks' own noise; a pose that refinement pulled
    sideways or tilted leaves more."""
    inliers = landmarks.inliers
    uv = landmarks.uv[inliers] - K[:2, 2]
    projected = project(K, T, landmarks.points_ct[inliers]) - K[:2, 2]
    k = (uv * projected).sum() / max((projected * projected).sum(), 1e-12)
    return float(np.median(np.linalg.norm(k * projected - uv, axis=1)))


def pnp_distrust(T: Float[np.ndarray, "4 4"] | None, ct_centre: Float[np.ndarray, "3"], num_inliers: int,
                 num_points: int, reprojection_error_px: float, params: Params, rescue: bool = True) -> str:
    """Why a PnP pose must not be published (or refined), or "" when it passes every gate.
    ``reprojection_error_px``: per 256 px of width; ``ct_centre``: mm, ``ct``. ``rescue``:
    with refinement on, a pose of few inliers may go to refinement (refine_min_inlier_ratio)."""
    if T is None:
        return "PnP found no consistent pose"
    if num_inliers < params.min_inliers:
        return f"too few inliers ({num_inliers} < {params.min_inliers})"
    # refinement, and the gates after it, can rescue a pose PnP alone could not publish
    min_ratio = params.refine_min_inlier_ratio if params.refine and rescue else params.min_inlier_ratio
    if num_inliers < min_ratio * num_points:
        return f"inlier ratio {num_inliers / num_points:.2f} below {min_ratio:.2f}"
    if not reprojection_error_px <= params.max_reprojection_error_px:
        return f"reprojection error {reprojection_error_px:.2f} px above {params.max_reprojection_error_px:.2f}"
    z = depth(T, ct_centre[None])[0]
    if not 200.0 < z < 2500.0:
        return f"implausible pose: CT centre {z:.0f} mm from the source along the beam"
    return ""


def refined_distrust(refined: Refinement, T_pnp: Float[np.ndarray, "4 4"], K: Float[np.ndarray, "3 3"],
                     landmarks: Landmarks, scale: float, params: Params) -> str:
    """Why a refined pose must not be published, or "". ``T_pnp``: the PnP pose refinement
    started from, whose residual is the landmarks' own noise in this frame. ``scale``: input
    pixels -> pixels per 256 px of width (the unit of the residual threshold)."""
    residual = landmark_residual_after_scale(refined.T_ct_source, K, landmarks) * scale
    # Judged against the frame's own floor, not an absolute bound: the encoder's noise varies
    # per frame (PnP's residual 1.0-2.6 px), and a bound on the residual itself refused the
    # right poses of noisy frames.
    increase = residual - landmark_residual_after_scale(T_pnp, K, landmarks) * scale
    if increase > params.max_residual_increase_px:
        return (f"refined pose disagrees with the landmarks (median residual {residual:.2f} px, "
                f"{increase:.2f} more than PnP's, above {params.max_residual_increase_px:.2f})")
    if not abs(refined.check.shift_mm) <= params.max_depth_check_mm:
        return (f"refined depth has not settled (the magnification search would move it "
                f"{refined.check.shift_mm:+.1f} mm, more than {params.max_depth_check_mm:.1f})")
    return match_distrust(refined.check, params)


def match_distrust(match: DepthMatch, params: Params) -> str:
    """Why a pose whose DRR, at its matched magnification, does not explain the frame must not
    be published, or "" (docs/operating_room.md):

    * a right pose's DRR correlates with the frame (plain NCC >= 0.82 on every right pose
      measured); a frame shown with inverted polarity, or read with the wrong intensity
      convention, gives poses that correlate with nothing;
    * a frame with an image intensifier's pincushion reads as a pose at the wrong depth that
      explains everything else; only the stretch growing with the radius gives it away.
    """
    if not match.appearance_ncc >= params.min_appearance_ncc:
        return (f"the pose's DRR does not explain the frame (NCC {match.appearance_ncc:.2f} below "
                f"{params.min_appearance_ncc:.2f}): inverted polarity, or the wrong image_intensity?")
    if not match.radial_distortion <= params.max_radial_distortion:
        return (f"the frame shows pincushion distortion (k1 {match.radial_distortion:.3f} above "
                f"{params.max_radial_distortion:.3f}): an image intensifier's frames need its dewarp model")
    return ""


# The trust gates, each with the sign of the change that loosens it. They were validated at
# Params' defaults: no pose > 10 mm off published in 460 held-out frames (docs/results.md).
LOOSENED_BY = {
    "min_inliers": -1, "min_inlier_ratio": -1, "refine_min_inlier_ratio": -1, "ransac_threshold_px": +1,
    "max_reprojection_error_px": +1, "max_residual_increase_px": +1, "max_depth_check_mm": +1,
    "min_appearance_ncc": -1, "max_radial_distortion": +1,
}


def pose_grade(params: Params) -> PoseGrade:
    """Navigation-grade at the validated settings, else advisory-grade with every departure
    that makes a wrong pose likelier (weights, refinement, looser gates); stricter is fine."""
    validated = Params()
    reasons = []
    if params.checkpoint and Path(params.checkpoint).expanduser().resolve() != DEFAULT_CHECKPOINT:
        reasons.append(f"encoder weights {params.checkpoint!r}, not the shipped checkpoint")
    if not params.refine:
        reasons.append("refinement off")
    elif params.refine_steps < validated.refine_steps:
        reasons.append(f"refine_steps {params.refine_steps} < {validated.refine_steps}")
    for name, sign in LOOSENED_BY.items():
        value, default = getattr(params, name), getattr(validated, name)
        if (value - default) * sign > 0:
            reasons.append(f"{name} {value} looser than {default}")
    return PoseGrade(tuple(reasons))
