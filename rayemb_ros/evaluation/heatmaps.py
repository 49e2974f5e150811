"""Similarity heatmaps of chosen landmarks in one frame, as in the RayEmb paper's figure:
sim(P, x) of each landmark's template subspace P at every pixel x of the frame's embedding.

For the report only (the estimator computes the same maps for all landmarks, batched, and
keeps just their peaks).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float

from rayemb_ros.estimation.estimator import Estimator
from rayemb_ros.estimation.result import Landmarks
from rayemb_ros.learning.subspace import similarity


@dataclass
class Heatmaps:
    """``maps[i]`` is landmark i's similarity on the encoder's working grid, which covers the
    same field of view as the input image (pixel centres at integers on both grids)."""

    points_ct: Float[np.ndarray, "P 3"]  # mm
    maps: Float[np.ndarray, "P h w"]


def pick_landmarks(landmarks: Landmarks, n: int = 4) -> np.ndarray:
    """Indices of the landmarks worth showing: the best-scoring PnP inliers and the
    best-scoring outlier (what a wrong peak looks like), at most ``n``."""
    by_score = np.argsort(-landmarks.scores)
    inliers, outliers = by_score[landmarks.inliers[by_score]], by_score[~landmarks.inliers[by_score]]
    shown = list(outliers[:1])
    return np.array(list(inliers[: n - len(shown)]) + shown, dtype=int)


def landmark_indices(estimator: Estimator, points_ct: Float[np.ndarray, "P 3"], tol_mm: float = 1e-3) -> np.ndarray:
    """Indices into the loaded scene's landmarks of given landmark points (they come back from
    the node in metres, hence a tolerance); ValueError for a point the scene does not hold."""
    scene_points = estimator.scene.landmarks
    dist = np.linalg.norm(scene_points[None] - np.asarray(points_ct)[:, None], axis=-1)
    idx = dist.argmin(axis=1)
    if (dist[np.arange(len(idx)), idx] > tol_mm).any():
        raise ValueError("landmarks do not belong to the loaded CT's landmark set")
    return idx


def landmark_heatmaps(
    estimator: Estimator, image: Float[np.ndarray, "H W"], K: Float[np.ndarray, "3 3"], points_ct: Float[np.ndarray, "P 3"]
) -> Heatmaps:
    """The similarity maps of the given scene landmarks in an attenuation image."""
    basis = estimator.scene.basis[landmark_indices(estimator, points_ct)]
    with torch.no_grad():
        maps = similarity(basis[None], estimator.embed(image, K))[0]
    return Heatmaps(np.asarray(points_ct, dtype=float), maps.float().cpu().numpy())
