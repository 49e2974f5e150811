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

import time
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float

from rayemb_ros.estimation.refine import PRIOR_LEVELS, PRIOR_REFINE_STEPS, STANDALONE_SEARCH_SAMPLES, Refiner
from rayemb_ros.estimation.bundle import (
    WEIGHTS, BundleError, is_bundle, load_scene, read_record, verify, volume_grade_reasons,
)
from rayemb_ros.estimation.result import Estimate, Landmarks, PoseGrade, VolumeInfo
from rayemb_ros.estimation.scene import Scene, landmark_subspaces
from rayemb_ros.estimation.tracking import Prior
from rayemb_ros.estimation.trust import match_distrust, pnp_distrust, pose_grade, refined_distrust
from rayemb_ros.estimation.uncertainty import covariance_calibration, pose_covariance
from rayemb_ros.geometry.camera import REFERENCE_WIDTH, project, rescale_pixels, resize_image, working_grid
from rayemb_ros.geometry.pnp import solve_pnp
from rayemb_ros.geometry.volume import Volume, load_volume
from rayemb_ros.imaging.render import import_renderer
from rayemb_ros.io.cache import cached_arrays
from rayemb_ros.learning.checkpoint import CheckpointError, load_encoder, weights_digest
from rayemb_ros.learning.device import pick_device
from rayemb_ros.learning.subspace import coarse_to_fine_peaks, window_peaks
from rayemb_ros.params import Params


class Estimator:
    def __init__(self, params: Params = Params()):
        self.params = params.validated()
        self._settings_grade = pose_grade(self.params)
        self.device = pick_device(params.device)
        self.encoder, self.checkpoint_meta = load_encoder(params.checkpoint or None, self.device)
        # Identifies the weights for the scene cache (state, not file name).
        self._weights_id = weights_digest(self.encoder)
        self.weights_label = params.checkpoint or "the shipped checkpoint"
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

    @property
    def pose_grade(self) -> PoseGrade:
        """What the poses are good for: the settings' grade, and the loaded scene's own reasons
        (a prepared bundle whose self-check did not pass)."""
        scene = self._scene
        return PoseGrade(self._settings_grade.reasons + (scene.grade_reasons if scene else ()))

    # ---------------------------------------------------------------- preload
    def load_volume(self, path: str) -> VolumeInfo:
        """Load a CT (file, DICOM folder or ``example``) and prepare it; replaces any previous one.

        Raises VolumeError (absent, unreadable, not a CT) and leaves the current scene as is.
        """
        started = time.perf_counter()
        if is_bundle(path):
            scene = self._bundle_scene(path)
            self._scene = scene
            info = self._info(scene)
        else:
            info = self.set_volume(load_volume(path), path)
        info.load_seconds = time.perf_counter() - started  # reading the file included
        return info

    def _bundle_scene(self, folder: str) -> Scene:
        """The scene a prepared bundle holds, once it is checked (BundleError otherwise)."""
        record = read_record(folder)
        verify(folder, record, self.params)
        try:
            encoder, _ = load_encoder(Path(folder).expanduser() / WEIGHTS, self.device)
        except CheckpointError as exc:
            raise BundleError(f"bundle {folder}: {exc}") from exc
        if weights_digest(encoder) != record.weights_digest:
            raise BundleError(f"bundle {folder}: {WEIGHTS} is not the weights the bundle was made with")
        volume = load_volume(record.ct_path)
        landmarks, basis = load_scene(Path(folder).expanduser())
        refiner = Refiner(volume, self.device) if self.renders_frames else None
        verdict = record.self_check.verdict if record.self_check else "none"
        return Scene(volume, landmarks, torch.as_tensor(basis, device=self.device), folder, refiner,
                     encoder.to(memory_format=torch.channels_last), f"bundle {record.weights_digest}",
                     record.grade_reasons, verdict)

    def _info(self, scene: Scene) -> VolumeInfo:
        return VolumeInfo(path=scene.source, num_landmarks=len(scene.landmarks), load_seconds=0.0,
                          shape=scene.volume.shape, spacing_mm=scene.volume.spacing, weights=scene.weights,
                          self_check=scene.self_check)

    def set_volume(self, volume: Volume, source: str = "") -> VolumeInfo:
        """Prepare a CT already in memory (e.g. a mirrored copy) and make it the current one."""
        started = time.perf_counter()
        scene = self.prepare(volume, source)
        self._scene = scene
        info = self._info(scene)
        info.load_seconds = time.perf_counter() - started
        return info

    def prepare(self, volume: Volume, source: str = "") -> Scene:
        """The scene of a CT: from the cache when this CT was prepared with these weights and
        settings before (a warm preload), else rendered and embedded (cold)."""
        p = self.params
        key = {
            "v": 1, "ct": volume.content_hash, "weights": self._weights_id, "templates": p.num_templates,
            "landmarks": p.num_landmarks, "per_landmark": p.templates_per_landmark, "min": p.min_inliers,
        }
        arrays = cached_arrays("scene", key, lambda: dict(zip(
            ("landmarks", "basis"), landmark_subspaces(volume, self.encoder, p, self.device))))
        landmarks, basis = arrays["landmarks"], arrays["basis"]
        refiner = Refiner(volume, self.device) if self.renders_frames else None
        return Scene(volume, landmarks, torch.as_tensor(basis, device=self.device), source, refiner,
                     weights=self.weights_label, grade_reasons=volume_grade_reasons(source))

    # ---------------------------------------------------------------- per frame
    def estimate(self, image: Float[np.ndarray, "H W"], K: Float[np.ndarray, "3 3"], prior: Prior | None = None) -> Estimate:
        """Register one frame (attenuation intensity, any scale and size; ``K`` of that image).

        With a ``prior`` (a pose the frame is expected near: estimation.tracking), landmarks are
        looked for in windows about their projections under it and refinement starts from it
        (``mode`` "prior"); when that gives no trusted pose, the frame is registered from
        scratch (``mode`` "full", ``fallback`` saying why the prior did not do).
        """
        started = time.perf_counter()
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
        with torch.no_grad():
            emb = self.embed(image, K)[0]
        encoder_ms = (time.perf_counter() - started) * 1000
        stage, fallback = {"encoder": encoder_ms}, ""
        if prior is not None:
            attempt = self._register(image, K, scene, emb, dict(stage), started, prior)
            if attempt.ok:
                return attempt
            fallback = attempt.reason
            stage["prior"] = (time.perf_counter() - started) * 1000 - encoder_ms
        estimate = self._register(image, K, scene, emb, stage, started)
        estimate.fallback = fallback
        return estimate

    def _register(self, image: Float[np.ndarray, "H W"], K: Float[np.ndarray, "3 3"], scene: Scene,
                  emb: Float[torch.Tensor, "D h w"], stage: dict[str, float], started: float,
                  prior: Prior | None = None) -> Estimate:
        """The frame's pose from its embeddings: landmarks (everywhere, or near ``prior``), PnP,
        the trust gates, refinement or the depth search. Every stage's time goes into ``stage``."""
        h, w = image.shape
        scale = REFERENCE_WIDTH / w  # input pixels -> reference pixels
        work = tuple(emb.shape[-2:])

        def tick(name: str, since: float) -> float:
            now = time.perf_counter()
            stage[name] = (now - since) * 1000
            return now

        t = time.perf_counter()
        with torch.no_grad():
            if prior is None:
                uv_small, scores = coarse_to_fine_peaks(scene.basis, emb)
                found = torch.ones(len(scores), dtype=torch.bool)
            else:
                predicted = rescale_pixels(project(K, prior.T_ct_source, scene.landmarks), (h, w), work)
                # A landmark behind the source or far outside the frame gets a window that cannot fit.
                predicted = np.clip(np.nan_to_num(predicted, nan=-1e4), -1e4, 1e4)
                radius = max(1, round(prior.window_px * work[1] / REFERENCE_WIDTH))
                uv_small, scores, found = window_peaks(
                    scene.basis, emb, torch.as_tensor(predicted, device=emb.device), radius)
            uv_small = uv_small.cpu().numpy().astype(np.float64)
            scores = scores.cpu().numpy().astype(np.float64)
            found = found.cpu().numpy()
        t = tick("similarity", t)
        uv = rescale_pixels(uv_small, work, (h, w))  # back to input pixels
        order = np.argsort(-scores)
        best = order[found[order]][: self.params.num_keep]
        points, uv, scores = scene.landmarks[best], uv[best], scores[best]

        pnp = solve_pnp(points, uv, K, self.params.ransac_threshold_px / scale)
        t = tick("pnp", t)
        landmarks = Landmarks(points, uv, scores, pnp.inliers)
        reproj = pnp.reprojection_error_px * scale
        num_inliers = int(pnp.inliers.sum())
        mode = "full" if prior is None else "prior"
        common = dict(num_inliers=num_inliers, reprojection_error_px=reproj, stage_ms=stage, mode=mode)

        def decided(reason: str, T: np.ndarray | None = None) -> Estimate:
            """The frame's estimate: refused for ``reason``, else the pose ``T``, timed."""
            stage["total"] = (time.perf_counter() - started) * 1000
            if reason:
                if prior is not None:
                    reason = f"{prior.source} as prior: {reason}"
                return Estimate.refused(reason, landmarks, T_initial=pnp.T_ct_source, latency_ms=stage["total"], **common)
            # a pose refined from a prior has its own calibration; one refined from scratch, the usual
            calibration = covariance_calibration(self.params, prior=prior is not None and prior.warm_start)
            covariance = pose_covariance(K, T, landmarks, pnp.reprojection_error_px, scene.volume.center, calibration)
            return Estimate(True, "", T, pnp.T_ct_source, landmarks, latency_ms=stage["total"], covariance=covariance,
                            **common)

        # Near a prior the landmarks were only looked for where the prior expects them: its
        # PnP pose needs the full share of inliers among as many landmarks as a frame from
        # scratch keeps, never refinement's rescue share.
        reason = pnp_distrust(pnp.T_ct_source, scene.volume.center, num_inliers,
                              len(points) if prior is None else self.params.num_keep, reproj, self.params,
                              rescue=prior is None)
        if reason:
            return decided(reason)
        T = pnp.T_ct_source
        if self.params.refine:
            if prior is None or not prior.warm_start:
                refined = scene.refiner.refine(image, K, T, steps=self.params.refine_steps, sdd_mm=self.params.sdd_mm)
            else:
                refined = scene.refiner.refine(image, K, prior.T_ct_source, steps=PRIOR_REFINE_STEPS,
                                               sdd_mm=self.params.sdd_mm, levels=PRIOR_LEVELS)
            T = refined.T_ct_source
            t = tick("refine", t)
            reason = refined_distrust(refined, pnp.T_ct_source, K, landmarks, scale, self.params)
        elif self.params.depth_search:
            T, match = scene.refiner.magnification_search(T, image, K, self.params.sdd_mm, STANDALONE_SEARCH_SAMPLES)
            t = tick("depth", t)
            reason = match_distrust(match, self.params)
        return decided(reason, T)

    def embed(self, image: Float[np.ndarray, "H W"], K: Float[np.ndarray, "3 3"]) -> Float[torch.Tensor, "1 D h w"]:
        """Ray embeddings of a frame on the working grid (the encoder's width, the frame's
        aspect, a multiple of the encoder's stride), by the loaded scene's weights."""
        scene = self._scene
        encoder = scene.encoder if scene is not None and scene.encoder is not None else self.encoder
        work_h, work_w = working_grid(*image.shape, encoder.config.image_size, encoder.stride)
        small, _ = resize_image(np.asarray(image, dtype=np.float32), K, work_h, work_w)
        return encoder(torch.as_tensor(small, device=self.device)[None, None])
