"""The RayEmb estimator: one fluoroscopy frame + a loaded CT -> a C-arm pose, or an honest no.

``Estimator.load_volume`` does everything that depends only on the CT, once: template DRRs,
their embeddings, M landmark candidates in bone, and for each landmark an orthonormal basis
of its ray embeddings in the templates that see it, and the refinement's renderer of the CT.
The arrays are cached on disk per CT content, weights and settings, so a second preload of
the same CT only reads the file.
``estimate`` then costs one encoder pass, one batched similarity, PnP, and refinement, or
with refinement off, by default one magnification search that corrects the PnP pose's depth.

No ROS in here: the node, ``rayemb replay`` and ``rayemb benchmark`` all call this API.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float

from .camera import depth, project, resize_image
from .checkpoint import DEFAULT_CHECKPOINT, load_encoder
from .params import Params
from .pnp import solve_pnp
from .poses import reference_detector, template_poses
from .render import cached_arrays, import_renderer, template_bank
from .refine import STANDALONE_SEARCH_SAMPLES, Refinement, Refiner
from .result import Estimate, Landmarks, PoseGrade, VolumeInfo
from .subspace import coarse_to_fine_peaks, sample_embeddings, subspace_basis
from .train import pick_device
from .volume import Volume, VolumeError, load_volume, sample_landmarks

__all__ = ["Estimator", "VolumeError", "Scene"]

# Pixel errors and thresholds are quoted per 256 px of image width, so that one setting
# means the same angular tolerance at any resolution.
_REFERENCE_WIDTH = 256.0


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
                 num_points: int, reprojection_error_px: float, params: Params) -> str:
    """Why a PnP pose must not be published (or refined), or "" when it passes every gate.
    ``reprojection_error_px``: per 256 px of width; ``ct_centre``: mm, ``ct``."""
    if T is None:
        return "PnP found no consistent pose"
    if num_inliers < params.min_inliers:
        return f"too few inliers ({num_inliers} < {params.min_inliers})"
    # refinement, and the gates after it, can rescue a pose PnP alone could not publish
    min_ratio = params.refine_min_inlier_ratio if params.refine else params.min_inlier_ratio
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
    if not abs(refined.depth_check_mm) <= params.max_depth_check_mm:
        return (f"refined depth has not settled (the magnification search would move it "
                f"{refined.depth_check_mm:+.1f} mm, more than {params.max_depth_check_mm:.1f})")
    return ""


# The trust gates, each with the sign of the change that loosens it. They were validated at
# Params' defaults: no pose > 10 mm off published in 460 held-out frames (README "Status").
_LOOSENED_BY = {
    "min_inliers": -1, "min_inlier_ratio": -1, "refine_min_inlier_ratio": -1, "ransac_threshold_px": +1,
    "max_reprojection_error_px": +1, "max_residual_increase_px": +1, "max_depth_check_mm": +1,
}


def pose_grade(params: Params) -> PoseGrade:
    """Navigation-grade at the validated settings, else tracking-grade with every departure
    that makes a wrong pose likelier (weights, refinement, looser gates); stricter is fine."""
    validated = Params()
    reasons = []
    if params.checkpoint and Path(params.checkpoint).expanduser().resolve() != DEFAULT_CHECKPOINT:
        reasons.append(f"encoder weights {params.checkpoint!r}, not the shipped checkpoint")
    if not params.refine:
        reasons.append("refinement off")
    elif params.refine_steps < validated.refine_steps:
        reasons.append(f"refine_steps {params.refine_steps} < {validated.refine_steps}")
    for name, sign in _LOOSENED_BY.items():
        value, default = getattr(params, name), getattr(validated, name)
        if (value - default) * sign > 0:
            reasons.append(f"{name} {value} looser than {default}")
    return PoseGrade(tuple(reasons))


class Estimator:
    def __init__(self, params: Params = Params()):
        self.params = params.validated()
        self.pose_grade = pose_grade(self.params)
        self.device = pick_device(params.device)
        self.encoder, self.checkpoint_meta = load_encoder(params.checkpoint or None, self.device)
        # Identifies the weights for the scene cache (state, not file name).
        self._weights_id = hashlib.sha256(
            b"".join(v.detach().cpu().numpy().tobytes() for v in self.encoder.state_dict().values())
        ).hexdigest()[:16]
        self.image_size = self.encoder.config.image_size
        # NHWC: oneDNN's convolutions run this network ~20 % faster on a CPU (128 px, 2
        # threads), and the embeddings agree with NCHW's to 4e-6.
        self.encoder = self.encoder.to(memory_format=torch.channels_last)
        if self.renders_frames:
            import_renderer()
        # Swapped whole by a load while estimates may run; each estimate reads it once.
        self._scene: Scene | None = None

    @property
    def renders_frames(self) -> bool:
        """Whether each frame renders DRRs (refinement, or the depth search without it): then
        the renderer is imported with the estimator and built with each scene, not on a frame."""
        return self.params.refine or self.params.depth_search

    @property
    def has_volume(self) -> bool:
        return self._scene is not None

    @property
    def scene(self) -> Scene | None:
        return self._scene

    # ---------------------------------------------------------------- preload
    def load_volume(self, path: str) -> VolumeInfo:
        """Load a CT (file, DICOM folder or ``example``) and prepare it; replaces any previous one.

        Raises VolumeError (absent, unreadable, not a CT) and leaves the current scene as is.
        """
        started = time.perf_counter()
        info = self.set_volume(load_volume(path), path)
        info.load_seconds = time.perf_counter() - started  # reading the file included
        return info

    def set_volume(self, volume: Volume, source: str = "") -> VolumeInfo:
        """Prepare a CT already in memory (e.g. a mirrored copy) and make it the current one."""
        started = time.perf_counter()
        scene = self.prepare(volume, source)
        self._scene = scene
        return VolumeInfo(
            path=source,
            num_landmarks=len(scene.landmarks),
            load_seconds=time.perf_counter() - started,
            shape=volume.shape,
            spacing_mm=volume.spacing,
        )

    def prepare(self, volume: Volume, source: str = "") -> Scene:
        """The scene of a CT: from the cache when this CT was prepared with these weights and
        settings before (a warm preload), else rendered and embedded (cold)."""
        p = self.params
        key = {
            "v": 1, "ct": volume.content_hash, "weights": self._weights_id, "templates": p.num_templates,
            "landmarks": p.num_landmarks, "per_landmark": p.templates_per_landmark, "min": p.min_inliers,
        }
        arrays = cached_arrays("scene", key, lambda: dict(zip(("landmarks", "basis"), self._landmark_subspaces(volume))))
        landmarks, basis = arrays["landmarks"], arrays["basis"]
        refiner = Refiner(volume, self.device) if self.renders_frames else None
        return Scene(volume, landmarks, torch.as_tensor(basis, device=self.device), source, refiner)

    def _landmark_subspaces(self, volume: Volume) -> tuple[Float[np.ndarray, "M 3"], Float[np.ndarray, "M D K"]]:
        """Landmarks in bone and, for each, the orthonormal basis of its embeddings in the
        templates (spread in angle) that see it."""
        p = self.params
        detector = reference_detector(self.image_size, self.image_size)
        poses = template_poses(p.num_templates, volume.center)
        bank = template_bank(volume, detector, poses, self.device)
        landmarks = sample_landmarks(volume, p.num_landmarks, seed=0)

        uv = project(detector.K, poses, np.broadcast_to(landmarks, (len(poses), *landmarks.shape)))  # T M 2
        margin = 3.0
        visible = ((uv >= margin) & (uv <= np.array([detector.width, detector.height]) - 1 - margin)).all(-1)
        with torch.no_grad():
            emb = []
            for i in range(0, len(poses), 8):
                e = self.encoder(torch.as_tensor(bank.images[i : i + 8, None], device=self.device))
                emb.append(sample_embeddings(e, torch.as_tensor(uv[i : i + 8], dtype=torch.float32, device=self.device)))
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
        keep_t = torch.as_tensor(keep, device=self.device)
        chosen_t = torch.as_tensor(np.stack(chosen), device=self.device)  # M K
        f = emb[chosen_t, keep_t[:, None]]  # M K D
        return landmarks[keep], subspace_basis(f).cpu().numpy()

    # ---------------------------------------------------------------- per frame
    def estimate(self, image: Float[np.ndarray, "H W"], K: Float[np.ndarray, "3 3"]) -> Estimate:
        """Register one frame (attenuation intensity, any scale and size; ``K`` of that image)."""
        started = time.perf_counter()
        stage: dict[str, float] = {}
        scene = self._scene
        if scene is None:
            return Estimate.refused("no volume loaded")
        image = np.asarray(image, dtype=np.float32)
        if image.ndim != 2 or min(image.shape) < 16:
            return Estimate.refused(f"image must be a 2D frame of at least 16x16 pixels, got shape {image.shape}")
        if not np.isfinite(image).all():
            return Estimate.refused("image contains NaN or Inf")
        if image.max() == image.min():
            return Estimate.refused("constant image")
        h, w = image.shape
        scale = _REFERENCE_WIDTH / w  # input pixels -> reference pixels

        def tick(name: str, since: float) -> float:
            now = time.perf_counter()
            stage[name] = (now - since) * 1000
            return now

        t = started
        with torch.no_grad():
            emb = self.embed(image, K)
            work_h, work_w = emb.shape[-2:]
            t = tick("encoder", t)
            uv_small, scores = coarse_to_fine_peaks(scene.basis, emb[0])
            uv_small = uv_small.cpu().numpy().astype(np.float64)
            scores = scores.cpu().numpy().astype(np.float64)
        t = tick("similarity", t)
        # back to input pixels (pixel centres at integers on both grids)
        uv = (uv_small + 0.5) * np.array([w / work_w, h / work_h]) - 0.5
        best = np.argsort(-scores)[: self.params.num_keep]
        points, uv, scores = scene.landmarks[best], uv[best], scores[best]

        pnp = solve_pnp(points, uv, K, self.params.ransac_threshold_px / scale)
        t = tick("pnp", t)
        landmarks = Landmarks(points, uv, scores, pnp.inliers)
        reproj = pnp.reprojection_error_px * scale
        num_inliers = int(pnp.inliers.sum())
        common = dict(num_inliers=num_inliers, reprojection_error_px=reproj, stage_ms=stage)
        reason = pnp_distrust(pnp.T_ct_source, scene.volume.center, num_inliers, len(points), reproj, self.params)
        if reason:
            stage["total"] = (time.perf_counter() - started) * 1000
            return Estimate.refused(reason, landmarks, T_initial=pnp.T_ct_source, latency_ms=stage["total"], **common)
        T = pnp.T_ct_source
        if self.params.refine:
            refined = scene.refiner.refine(image, K, T, steps=self.params.refine_steps, sdd_mm=self.params.sdd_mm)
            T = refined.T_ct_source
            t = tick("refine", t)
            reason = refined_distrust(refined, pnp.T_ct_source, K, landmarks, scale, self.params)
            if reason:
                stage["total"] = (time.perf_counter() - started) * 1000
                return Estimate.refused(reason, landmarks, T_initial=pnp.T_ct_source, latency_ms=stage["total"], **common)
        elif self.params.depth_search:
            T = scene.refiner.magnification_search(T, image, K, self.params.sdd_mm, STANDALONE_SEARCH_SAMPLES)
            t = tick("depth", t)
        stage["total"] = (time.perf_counter() - started) * 1000
        return Estimate(True, "", T, pnp.T_ct_source, landmarks, latency_ms=stage["total"], **common)

    def embed(self, image: Float[np.ndarray, "H W"], K: Float[np.ndarray, "3 3"]) -> Float[torch.Tensor, "1 D h w"]:
        """Ray embeddings of a frame on the working grid: the encoder's width, the frame's
        aspect, a multiple of the encoder's stride."""
        h, w = image.shape
        stride = self.encoder.stride
        work_w = self.image_size
        work_h = max(stride, int(round(h * work_w / w / stride)) * stride)
        small, _ = resize_image(np.asarray(image, dtype=np.float32), K, work_h, work_w)
        return self.encoder(torch.as_tensor(small, device=self.device)[None, None])
