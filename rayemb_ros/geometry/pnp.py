"""Pose from 2D-3D correspondences: PnP with RANSAC (OpenCV), then a least-squares polish."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from jaxtyping import Bool, Float

from rayemb_ros.geometry.camera import invert_pose, project


@dataclass
class PnPResult:
    T_ct_source: Float[np.ndarray, "4 4"] | None  # camera-to-world, mm; None when PnP failed
    inliers: Bool[np.ndarray, "N"]
    reprojection_error_px: float  # RMS over the inliers


def solve_pnp(
    points_ct: Float[np.ndarray, "N 3"],
    uv: Float[np.ndarray, "N 2"],
    K: Float[np.ndarray, "3 3"],
    threshold_px: float,
    iterations: int = 2000,
    seed: int = 0,
) -> PnPResult:
    """RANSAC over minimal sets, then Levenberg-Marquardt on the inliers."""
    n = len(uv)
    none = PnPResult(None, np.zeros(n, dtype=bool), float("nan"))
    if n < 6:
        return none
    obj = np.ascontiguousarray(points_ct, dtype=np.float64)
    img = np.ascontiguousarray(uv, dtype=np.float64)
    cv2.setRNGSeed(seed)  # RANSAC draws from OpenCV's global RNG: make results repeatable
    ok, rvec, tvec, idx = cv2.solvePnPRansac(
        obj, img, K.astype(np.float64), None, iterationsCount=iterations, reprojectionError=threshold_px,
        confidence=0.9999, flags=cv2.SOLVEPNP_AP3P,
    )
    if not ok or idx is None or len(idx) < 6:
        return none
    inliers = np.zeros(n, dtype=bool)
    inliers[idx.ravel()] = True
    rvec, tvec = cv2.solvePnPRefineLM(obj[inliers], img[inliers], K.astype(np.float64), None, rvec, tvec)
    T_source_ct = np.eye(4)
    T_source_ct[:3, :3] = cv2.Rodrigues(rvec)[0]
    T_source_ct[:3, 3] = tvec.ravel()
    T = invert_pose(T_source_ct)
    # Re-label inliers against the polished pose.
    err = np.linalg.norm(project(K, T, obj) - img, axis=1)
    inliers = err < threshold_px
    rms = float(np.sqrt(np.mean(err[inliers] ** 2))) if inliers.any() else float("nan")
    return PnPResult(T, inliers, rms)
