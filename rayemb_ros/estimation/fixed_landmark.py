"""The fixed-landmark baseline's estimator: heatmap peaks of its 14 named landmarks -> PnP.

Inference: per map the arg-max with a sub-pixel parabola fit; landmarks whose probability
of being in view (1 - dustbin) reaches ``min_visibility`` go to PnP with RANSAC. Unlike
RayEmb, it only knows these 14 points of the CT it was trained on: a new CT needs the same
14 points located in it (the benchmark mirrors them for the mirrored CT). The network and
its training: :mod:`rayemb_ros.learning.landmark_net`.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float

from rayemb_ros.estimation.result import Estimate, Landmarks
from rayemb_ros.geometry.camera import REFERENCE_WIDTH, rescale_pixels, resize_image, working_grid
from rayemb_ros.geometry.pnp import solve_pnp
from rayemb_ros.learning.checkpoint import FIXED_LANDMARK_CHECKPOINT, load_encoder
from rayemb_ros.learning.device import pick_device
from rayemb_ros.learning.landmark_net import HeatmapNet
from rayemb_ros.learning.subspace import subpixel_peaks


class FixedLandmarkEstimator:
    """Pose of a frame from the 14 fixed landmarks: heatmap peaks -> PnP with RANSAC."""

    def __init__(
        self,
        checkpoint: str | Path = FIXED_LANDMARK_CHECKPOINT,
        device: str = "auto",
        min_visibility: float = 0.5,
        ransac_threshold_px: float = 6.0,  # per 256 px of width
        min_inliers: int = 6,
    ):
        self.net, meta = load_encoder(checkpoint, pick_device(device), model=HeatmapNet)
        self.names = tuple(meta["landmarks"]["names"])
        self.points_ct = np.asarray(meta["landmarks"]["points_ct_mm"], dtype=np.float64)
        self.min_visibility = min_visibility
        self.ransac_threshold_px = ransac_threshold_px
        self.min_inliers = min_inliers

    def estimate(
        self,
        image: Float[np.ndarray, "H W"],
        K: Float[np.ndarray, "3 3"],
        points_ct: Float[np.ndarray, "M 3"] | None = None,
    ) -> Estimate:
        """Register one frame (attenuation intensity, any size; ``K`` of that image).
        ``points_ct``: the landmarks in the CT being registered (default: the training CT's)."""
        started = time.perf_counter()
        points_ct = self.points_ct if points_ct is None else np.asarray(points_ct, dtype=np.float64)
        image = np.asarray(image, dtype=np.float32)
        h, w = image.shape
        work_h, work_w = working_grid(h, w, self.net.config.image_size, self.net.stride)
        small, _ = resize_image(image, K, work_h, work_w)
        with torch.no_grad():
            logits, dustbin = self.net(torch.as_tensor(small, device=next(self.net.parameters()).device)[None, None])
            m = logits.shape[1]
            scores = torch.cat([logits.reshape(1, m, -1), dustbin[..., None]], dim=-1)
            visibility = (1 - F.softmax(scores, dim=-1)[0, :, -1]).cpu().numpy().astype(np.float64)
            uv_small = subpixel_peaks(logits[0])[0].cpu().numpy().astype(np.float64)
        uv = rescale_pixels(uv_small, (work_h, work_w), (h, w))  # back to input pixels
        keep = visibility >= self.min_visibility
        pnp = solve_pnp(points_ct[keep], uv[keep], K, self.ransac_threshold_px * w / REFERENCE_WIDTH)
        landmarks = Landmarks(points_ct[keep], uv[keep], visibility[keep], pnp.inliers)
        num_inliers = int(pnp.inliers.sum())
        latency = (time.perf_counter() - started) * 1000
        common = dict(num_inliers=num_inliers, reprojection_error_px=pnp.reprojection_error_px * REFERENCE_WIDTH / w,
                      latency_ms=latency, stage_ms={"total": latency})
        if pnp.T_ct_source is None or num_inliers < self.min_inliers:
            return Estimate.refused(f"{num_inliers} PnP inliers among {int(keep.sum())} visible landmarks",
                                    landmarks, T_initial=pnp.T_ct_source, **common)
        return Estimate(True, "", pnp.T_ct_source, pnp.T_ct_source, landmarks, **common)
