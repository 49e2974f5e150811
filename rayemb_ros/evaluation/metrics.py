"""Registration accuracy as the contract defines it: mTRE per frame, GFR@d, percentiles.

mTRE of one frame (../shared/CONTRACT.md, "Frames, units"): the mean over target points
X_i in ``ct`` of ``|| inv(T_est) X_i - inv(T_gt) X_i ||`` in mm, i.e. how far the CT's points
land from where they should in the C-arm's frame. The target points are the CT's bone
(voxels at or above the bone threshold of ``Volume.bone_mask``, HU >= 350), a fixed random
subsample of at most ``TARGET_POINTS`` voxel centres drawn with ``TARGET_SEED``: the same
points for every method and every run on one CT, spread over the whole skeleton in the
scan, so that rotation errors weigh by the anatomy's real extent and not by a landmark
selection of the method being judged.

A frame without a pose has mTRE = inf: it fails every GFR threshold and sorts above every
posed frame in the percentiles. Plain numpy maths on 4x4 matrices (no torch tensors).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from jaxtyping import Float

from rayemb_ros.geometry.camera import world_to_camera
from rayemb_ros.geometry.covariance import CHI2_6_95, mahalanobis_squared
from rayemb_ros.geometry.volume import VolumeError

if TYPE_CHECKING:
    from rayemb_ros.geometry.volume import Volume

TARGET_POINTS = 4096
TARGET_SEED = 0
TARGET_DEFINITION = (
    f"bone voxel centres of the CT (HU >= 350), a fixed random subsample of at most {TARGET_POINTS} "
    f"(seed {TARGET_SEED})"
)
PERCENTILES = (25, 50, 95)
GFR_THRESHOLDS_MM = (10.0, 5.0)
LATENCY_PERCENTILES = (50, 95, 99)


def target_points(volume: Volume, n: int = TARGET_POINTS, seed: int = TARGET_SEED) -> Float[np.ndarray, "n 3"]:
    """The mTRE target points of a CT: bone voxel centres in ``ct`` (mm), fixed for the CT."""
    ijk = np.argwhere(volume.bone_mask())
    if len(ijk) == 0:
        raise VolumeError("the CT has no bone voxels to measure mTRE on")
    if len(ijk) > n:
        # argwhere's order is the voxel order, so one seed always picks the same voxels.
        ijk = ijk[np.sort(np.random.default_rng(seed).choice(len(ijk), size=n, replace=False))]
    return volume.voxels_to_ct(ijk.astype(np.float64))


def mtre(
    T_est: Float[np.ndarray, "*B 4 4"], T_gt: Float[np.ndarray, "*B 4 4"], points: Float[np.ndarray, "N 3"]
) -> Float[np.ndarray, "*B"]:
    """mTRE (mm) of estimated poses against ground truth (T_ct_source, mm), per pose."""
    T_est, T_gt = np.asarray(T_est, dtype=np.float64), np.asarray(T_gt, dtype=np.float64)
    points = np.broadcast_to(points, (*np.broadcast_shapes(T_est.shape[:-2], T_gt.shape[:-2]), *points.shape))
    diff = world_to_camera(T_est, points) - world_to_camera(T_gt, points)
    return np.linalg.norm(diff, axis=-1).mean(axis=-1)


def frame_mtre(
    T_est: Float[np.ndarray, "4 4"] | None, T_gt: Float[np.ndarray, "4 4"], points: Float[np.ndarray, "N 3"]
) -> float:
    """mTRE of one frame; inf when the frame has no pose."""
    return math.inf if T_est is None else float(mtre(T_est, T_gt, points))


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (linear interpolation, as numpy's default) where values may be inf.

    It is inf as soon as the interpolation leans on an inf value, and nan for no values:
    numpy's own percentile turns inf - inf into nan and warns.
    """
    x = np.sort(np.asarray(values, dtype=np.float64))
    if len(x) == 0:
        return math.nan
    rank = q / 100.0 * (len(x) - 1)
    lo, hi = math.floor(rank), math.ceil(rank)
    frac = rank - lo
    if math.isinf(x[hi]) and (frac > 0 or hi == lo):
        return math.inf
    return float(x[lo] + frac * (x[hi] - x[lo])) if frac > 0 else float(x[lo])


def percentiles(values: Sequence[float], qs: Sequence[int] = PERCENTILES) -> dict[str, float]:
    """``{"p25": ..., "p50": ..., ...}`` of the values (inf-aware, nan when empty)."""
    return {f"p{q}": percentile(values, q) for q in qs}


def gfr(mtre_mm: Sequence[float], threshold_mm: float) -> float:
    """GFR@d in percent: the share of frames whose mTRE exceeds d (a frame without pose has
    mTRE = inf and so always counts); nan for no frames."""
    x = np.asarray(mtre_mm, dtype=np.float64)
    return float(100.0 * np.mean(x > threshold_mm)) if len(x) else math.nan


def accuracy_summary(mtre_mm: Sequence[float]) -> dict[str, object]:
    """mTRE percentiles and GFR@10/GFR@5 over frames with ground truth (inf = no pose).

    ``mtre_mm`` counts every frame, a failure being inf, so a percentile that falls on a
    failure is inf: it never hides refused frames. ``mtre_posed_mm`` is the same over the
    frames that have a pose, for reading the accuracy of the poses that were given.
    """
    posed = [m for m in mtre_mm if math.isfinite(m)]
    return {
        "frames_evaluated": len(mtre_mm),
        "frames_posed": len(posed),
        "mtre_mm": percentiles(mtre_mm),
        "mtre_posed_mm": percentiles(posed),
        "gfr_percent": {f"{d:g}": gfr(mtre_mm, d) for d in GFR_THRESHOLDS_MM},
    }


def latency_summary(latency_ms: Sequence[float]) -> dict[str, float]:
    """Latency percentiles (ms) and the frame count they are over."""
    return {"frames": len(latency_ms), **percentiles(latency_ms, LATENCY_PERCENTILES)}


def covariance_coverage(errors: Sequence[Float[np.ndarray, "6"]], covariances: Sequence[Float[np.ndarray, "6 6"]]) -> dict[str, object]:
    """How well the published covariances describe the errors (``geometry.covariance``'s
    6-vector, mm and rad): the share of accepted poses whose error lies inside its covariance's
    95 % region (Mahalanobis^2 < chi2_6(0.95)), overall and per tercile of predicted
    uncertainty (the position's sd, sqrt of the trace): a calibrated covariance holds 95 % in
    each, a constant one too many where it predicts little and too few where it predicts much."""
    if not len(errors):
        return {"frames": 0}
    inside = np.array([mahalanobis_squared(e, C) < CHI2_6_95 for e, C in zip(errors, covariances)])
    spread = np.array([math.sqrt(np.trace(C[:3, :3])) for C in covariances])
    order = np.argsort(spread, kind="stable")
    terciles = [inside[part].mean() * 100.0 for part in np.array_split(order, 3) if len(part)]
    return {"frames": len(inside), "inside_95_percent": float(100.0 * inside.mean()),
            "terciles_inside_95_percent": [float(t) for t in terciles],
            "predicted_position_sd_mm": percentiles(spread.tolist())}
