"""DRR rendering: nanodrr for everything hot, diffdrr as the independent renderer.

Both return attenuation line integrals (sum of mu * length along each ray; brighter = more
attenuation), H x W per pose, in the conventions of :mod:`rayemb_ros.geometry.camera`.

* :class:`NanoRenderer` (nanodrr; differentiable in the pose; fused kernels on CUDA) renders
  training pairs, template banks and the refinement's DRRs.
* :class:`DiffdrrRenderer` (diffdrr) renders test frames, so that the frames
  a method is judged on never come from the renderer it was trained on.
* :func:`template_bank` renders once per (CT content, geometry) and caches to disk
  (:mod:`rayemb_ros.io.cache`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from jaxtyping import Float

from rayemb_ros.geometry.camera import Detector, nanodrr_k_inv, pose_to_diffdrr
from rayemb_ros.geometry.volume import Volume
from rayemb_ros.io.cache import cached_arrays

N_SAMPLES = 250  # ray samples inside the volume; 250 is within ~1% of 500 at <= 256 px


def import_renderer() -> None:
    """Import nanodrr's renderer now: it pulls in torch._dynamo (~3 s on 2 CPU cores), which
    a process that renders nothing (a CLI, a bag tool) should not pay, and which a node
    should pay before it reports ready, not on its first frame."""
    import nanodrr.drr  # noqa: F401


class NanoRenderer:
    """nanodrr DRRs of one CT on one device."""

    def __init__(self, volume: Volume, device: str | torch.device = "cpu", n_samples: int = N_SAMPLES):
        self.device = torch.device(device)
        self.subject = volume.subject(self.device)
        self.subject.image  # nanodrr converts HU to attenuation on first use: now, not on a frame
        self.n_samples = n_samples
        self._drrs: dict[tuple[Detector, ...], torch.nn.Module] = {}

    def _drr(self, detectors: tuple[Detector, ...]):
        """A nanodrr DRR module for one intrinsics per batch element (cached by geometry)."""
        if detectors not in self._drrs:
            from nanodrr.drr import DRR

            k_inv = torch.tensor(np.stack([nanodrr_k_inv(d.K) for d in detectors]), dtype=torch.float32)
            sdd = torch.tensor([d.sdd for d in detectors], dtype=torch.float32)
            if len(self._drrs) > 16:  # training draws a new geometry per batch: keep the cache small
                self._drrs.clear()
            self._drrs[detectors] = DRR(k_inv, sdd, detectors[0].height, detectors[0].width).to(self.device)
        return self._drrs[detectors]

    def render(
        self, T_ct_source: Float[torch.Tensor, "B 4 4"], detector: Detector | Sequence[Detector],
        n_samples: int | None = None,
    ) -> Float[torch.Tensor, "B H W"]:
        """Line integrals for camera-to-world poses (mm); differentiable in the poses.

        ``detector`` is one detector for all poses, or a sequence of one per pose (all of
        the same pixel size); ``n_samples`` per ray overrides the renderer's own."""
        T = T_ct_source.to(self.device, torch.float32)
        detectors = (detector,) if isinstance(detector, Detector) else tuple(detector)
        return self._drr(detectors)(self.subject, T, n_samples=n_samples or self.n_samples)[:, 0]

    def render_np(self, T_ct_source: Float[np.ndarray, "B 4 4"], detector: Detector, batch: int = 8) -> Float[np.ndarray, "B H W"]:
        out = []
        with torch.no_grad():
            for i in range(0, len(T_ct_source), batch):
                out.append(self.render(torch.as_tensor(T_ct_source[i : i + batch]), detector).cpu().numpy())
        return np.concatenate(out).astype(np.float32)


class DiffdrrRenderer:
    """The same line integrals from diffdrr (its own ray tracer), in the CT's own frame.

    ``trilinear`` on a copy resampled to ``resample_mm`` voxels renders a 256 px test frame
    in about a second on 2 cores (Siddon on the full scan takes 10-20 s); ``siddon`` on the
    original voxels is the exact reference (the bead test uses it).
    """

    def __init__(self, volume: Volume, renderer: str = "trilinear", resample_mm: float | None = 2.0):
        from diffdrr.data import read
        from torchio import ScalarImage

        image = ScalarImage(tensor=torch.from_numpy(np.ascontiguousarray(volume.hu))[None], affine=volume.affine)
        self.subject = read(image, orientation=None, center_volume=False, resample_target=resample_mm)
        self.renderer = renderer
        self._drr: tuple[Detector, torch.nn.Module] | None = None

    def _module(self, detector: Detector):
        if self._drr is None or self._drr[0] != detector:
            from diffdrr.drr import DRR

            drr = DRR(
                self.subject, sdd=detector.sdd, height=detector.height, width=detector.width,
                delx=detector.delx, dely=detector.dely, x0=detector.x0, y0=detector.y0,
                reverse_x_axis=True, renderer=self.renderer,
            )
            self._drr = (detector, drr)
        return self._drr[1]

    def render_np(self, T_ct_source: Float[np.ndarray, "B 4 4"], detector: Detector) -> Float[np.ndarray, "B H W"]:
        from diffdrr.pose import RigidTransform

        drr = self._module(detector)
        reorient = drr.detector.reorient.matrix[0].double().numpy()
        out = []
        with torch.no_grad():
            for T in T_ct_source:
                pose = RigidTransform(torch.tensor(pose_to_diffdrr(T, reorient), dtype=torch.float32)[None])
                out.append(drr(pose)[0, 0].numpy())
        # diffdrr integrates a normalised density rather than mu: same shape, another scale
        # and bone contrast; nothing downstream assumes an absolute scale.
        return np.stack(out).astype(np.float32)


@dataclass
class TemplateBank:
    """Template DRRs of one CT at known poses: the reference views of the subspaces."""

    images: Float[np.ndarray, "T H W"]
    poses: Float[np.ndarray, "T 4 4"]  # T_ct_source, mm
    detector: Detector


def template_bank(
    volume: Volume,
    detector: Detector,
    poses: Float[np.ndarray, "T 4 4"],
    device: str | torch.device = "cpu",
) -> TemplateBank:
    """Render (or load from the cache) the templates of a CT; keyed by content and geometry."""
    key = json.dumps({"v": 1, "ct": volume.content_hash, "det": asdict(detector), "n": N_SAMPLES}).encode()
    arrays = cached_arrays(
        "templates", key + np.round(poses, 4).tobytes(),
        lambda: {"images": NanoRenderer(volume, device).render_np(poses, detector), "poses": poses},
    )
    return TemplateBank(arrays["images"], arrays["poses"], detector)
