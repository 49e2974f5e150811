"""What the estimator prepares once per CT: landmark candidates in bone and, for each, the
orthonormal basis of its ray embeddings in the template DRRs that see it (its subspace).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float

from rayemb_ros.estimation.refine import Refiner
from rayemb_ros.geometry.camera import project
from rayemb_ros.geometry.poses import reference_detector, template_poses
from rayemb_ros.geometry.volume import Volume, VolumeError, sample_landmarks
from rayemb_ros.imaging.render import template_bank
from rayemb_ros.learning.model import Encoder
from rayemb_ros.learning.subspace import sample_embeddings, subspace_basis
from rayemb_ros.params import Params


@dataclass
class Scene:
    """Everything prepared for one CT."""

    volume: Volume
    landmarks: Float[np.ndarray, "M 3"]  # mm, ct
    basis: Float[torch.Tensor, "M D K"]  # orthonormal, on the estimator's device
    source: str
    # Built with the scene, not on the first frame: coarsening the CT and setting up its
    # renderer took 0.3-0.6 s, which the first frame after every load used to pay.
    refiner: Refiner | None = None
    # The weights the subspaces were made with (None: the estimator's own), which frames of
    # this CT are embedded with: a prepared bundle carries its own.
    encoder: Encoder | None = None
    weights: str = ""  # which weights, as the node reports it
    # Why this scene's poses are not navigation-grade whatever the settings (a bundle whose
    # self-check failed), and what its self-check said.
    grade_reasons: tuple[str, ...] = ()
    self_check: str = ""


def spread_views(directions: Float[np.ndarray, "T 3"], candidates: np.ndarray, k: int) -> np.ndarray:
    """``k`` of the candidate templates whose viewing directions are farthest apart (greedy),
    starting from the one nearest the candidates' mean direction. Widely spread templates
    give less correlated errors than the k most similar ones."""
    d = directions[candidates]
    chosen = [int(np.argmax(d @ d.mean(0)))]
    gap = 1 - d @ d[chosen[0]]
    for _ in range(k - 1):
        chosen.append(int(np.argmax(gap)))
        gap = np.minimum(gap, 1 - d @ d[chosen[-1]])
    return candidates[chosen]


def landmark_subspaces(
    volume: Volume, encoder: Encoder, params: Params, device: torch.device
) -> tuple[Float[np.ndarray, "M 3"], Float[np.ndarray, "M D K"]]:
    """Landmarks in bone and, for each, the orthonormal basis of its embeddings in the
    templates (spread in angle) that see it."""
    p = params
    detector = reference_detector(encoder.config.image_size, encoder.config.image_size)
    poses = template_poses(p.num_templates, volume.center)
    bank = template_bank(volume, detector, poses, device)
    landmarks = sample_landmarks(volume, p.num_landmarks, seed=0)

    uv = project(detector.K, poses, np.broadcast_to(landmarks, (len(poses), *landmarks.shape)))  # T M 2
    margin = 3.0
    visible = ((uv >= margin) & (uv <= np.array([detector.width, detector.height]) - 1 - margin)).all(-1)
    with torch.no_grad():
        emb = []
        for i in range(0, len(poses), 8):
            e = encoder(torch.as_tensor(bank.images[i : i + 8, None], device=device))
            emb.append(sample_embeddings(e, torch.as_tensor(uv[i : i + 8], dtype=torch.float32, device=device)))
        emb = torch.cat(emb)  # T M D
    directions = poses[:, :3, 2]
    k = p.templates_per_landmark
    keep, chosen = [], []
    for m in range(len(landmarks)):
        seen = np.flatnonzero(visible[:, m])
        if len(seen) >= k:
            keep.append(m)
            chosen.append(spread_views(directions, seen, k))
    if len(keep) < max(p.min_inliers, 6):
        raise VolumeError(f"only {len(keep)} landmarks are visible in enough templates; is this a CT of bone?")
    keep_t = torch.as_tensor(keep, device=device)
    chosen_t = torch.as_tensor(np.stack(chosen), device=device)  # M K
    f = emb[chosen_t, keep_t[:, None]]  # M K D
    return landmarks[keep], subspace_basis(f).cpu().numpy()
