"""Intensity-based refinement (DiffDRR-style): gradient steps on the pose that raise the
gradient normalised cross-correlation between the frame and a DRR rendered at that pose.

PnP on landmarks is weakest along the beam (depth changes only the magnification, so a
landmark layout shrunk by 1 % reads as a CT 8 mm too far away); the DRR's match with the
whole image pins it. Three choices make that work on real-looking frames (measured on
held-out diffdrr frames with noise and collimation, docs/refinement.md):

* **The collimated field only.** Outside the iris and shutters the frame is flat while a
  DRR shows anatomy; scored there, NCC pulls the pose towards whatever shrinks that
  mismatch. Every similarity is taken over :func:`field_mask`.
* **Gradient NCC** (the mean NCC of the horizontal and vertical image gradients): edges of
  bone survive the display's window, gamma, heel and saturation, which plain NCC (linear in
  intensity) does not model.
* **Pose updates about the CT, not the source.** ``T = T0 @ C exp(xi) C^-1`` with C the
  translation to the CT centre in the source frame: xi[:3] turn the C-arm about the patient
  (rad), xi[3:] shift it (mm, xi[5] along the beam). About the source, a 0.2 degree step
  would sweep the anatomy 3 mm across the image and the steps fight each other.

Schedule, per level (64 px, then 96 px): a search along the ray through the CT centre for the
magnification that matches the frame (one DRR at 128 px, scaled), then Adam steps; at the end
the same search, from the result, checks that the depth has settled, and its move is applied
when over DEPTH_SETTLE_MM. Units: mm and radians; poses are T_ct_source (camera-to-world), as
everywhere in the package.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float

from rayemb_ros.geometry.camera import Detector, project, resize_image, world_to_camera
from rayemb_ros.imaging.fluoro import gaussian_blur
from rayemb_ros.imaging.render import NanoRenderer
from rayemb_ros.geometry.volume import Volume

REFINE_SAMPLES = 100  # ray samples per pixel: enough for edges at <= 96 px, and fast
# DRRs of <= 96 px (>= 3 mm pixels at the patient) lose nothing on a CT of <= 1.5 mm voxels,
# and sampling a quarter of the voxels halves the render time on a CPU.
REFINE_VOXEL_MM = 1.5
# The search along the beam: one DRR at the start pose, magnified about the CT centre's
# projection by each factor. 0.9 .. 1.1 covers the CT ~90 mm farther .. ~70 mm nearer at 800 mm.
MAGNIFICATIONS = np.linspace(0.9, 1.1, 51)
MAGNIFICATION_WIDTH = 128  # px: a 1 % scale moves anatomy 50 px from the centre by 0.5 px
MAGNIFICATION_PAD = 0.12  # of the width, rendered beyond each edge: a shrunken DRR still fills the frame
# The DRR is smoothed before scaling (Gaussian sigma, px at MAGNIFICATION_WIDTH). Bilinear
# resampling blurs every factor but exactly 1.0, and unsmoothed that bias alone moved right
# poses 2-7 mm (median |error| of the proposed move 4.8 mm; 1.0 mm with this smoothing).
MAGNIFICATION_BLUR_PX = 1.5
MAGNIFICATION_SAMPLES = 64  # ray samples: the smoothed DRR needs fewer, and this render is most of the search's time
# The search alone (refinement off) needs fewer still: its error is small beside the
# landmarks' there. Over 470 held-out frames 32 samples gave the same poses in 60 % of the
# time (median 3.37 -> 3.29 mm, GFR@10 5.1 -> 5.3 %, search 95 -> 58 ms), while inside
# refinement, which settles depth to ~1 mm, they took the median from 0.83 to 1.31 mm.
STANDALONE_SEARCH_SAMPLES = 32
# The search run once more after the last level (the depth check) is applied when it asks
# for more than this (mm); smaller moves are within its own noise (~1 mm median error).
# Applied, it took the refined poses of 356 held-out frames from median 0.82 to 0.77 mm and
# those > 5 mm off from 6 to 1 (36 poses better, 10 worse by > 0.5 mm; applying every
# move: 64 better, 41 worse).
DEPTH_SETTLE_MM = 1.0
# An image intensifier's pincushion (radius x (1 + k1 rho^2), rho = 1 at half the smaller side,
# about the image centre) reads to PnP and to the magnification search as depth: without its
# dewarp model, frames of k1 0.06 were posed 15-44 mm too far along the beam, every landmark
# residual and the DRR's correlation as good as a right pose's (docs/operating_room.md). A
# radial stretch is visible only as magnification growing with the radius, so the best DRR
# is warped once more by each candidate k1, about the image centre and with the field's mean
# magnification kept, and the best k1 is the frame's distortion beyond the DRR.
DISTORTIONS = np.linspace(-0.15, 0.15, 31)


@dataclass(frozen=True)
class Level:
    """One resolution of the schedule: DRR width (px), share of the steps, Adam step sizes
    (about the first step's size: radians and mm), and whether the magnification search
    places the depth before the steps."""

    width: int
    share: float
    lr_rot: float
    lr_trans: float
    search: bool = True


# The coarse level's rotation step sets how far refinement can turn: with 5e-3 rad its 13
# annealed steps turned at most ~2.7 deg, and PnP poses tilted ~7 deg about the image's
# horizontal axis ended 11.5 mm off (tilt traded against depth). With 1e-2 they end <= 8 mm
# and the median improves (100 held-out frames, seed 707: 1.17 -> 0.91 mm).
LEVELS = (Level(64, 0.7, 1e-2, 1.0), Level(96, 0.3, 2e-3, 0.4))
# From a prior (estimation.tracking): the start is the prior, the last trusted pose carried
# on by the C-arm's last motion, so the fine level alone, without a search before it, in 3
# steps (0.7 s of 2.4 s). Its depth is the weak direction: the searches settle it to ~2 mm,
# only the fine level's steps move it nearer. On 25 frames of an orbit (docs/tracking.md):
# 3 fine steps 1.66 mm median (0.69 s); 4 coarse steps with a search before them 1.46 mm
# but a third of the frames back on the full path (depth unsettled); 4 coarse steps
# without it 2.0 mm; from PnP's pose instead of the prior, depth unsettled on every frame.
PRIOR_LEVELS = (Level(96, 1.0, 2e-3, 0.4, search=False),)
PRIOR_REFINE_STEPS = 3


@dataclass(frozen=True)
class DepthMatch:
    """The magnification search's answer: how far to move the source towards the CT centre
    along its ray (mm), and the plain NCC of the frame with the DRR at the best magnification
    over the collimated field: whether the pose explains the image at all (a frame shown with
    inverted polarity, or read with the wrong intensity convention, does not); and the
    pincushion the frame shows beyond the DRR (:data:`DISTORTIONS`)."""

    shift_mm: float
    appearance_ncc: float
    radial_distortion: float  # pincushion k1 the frame shows beyond the DRR (DISTORTIONS)


@dataclass
class Refinement:
    """A refined pose (camera-to-world, mm), the gradient NCC, in [-1, 1], of the start and
    of the last level's result at the finest level, and ``check``: the magnification search
    run again from the refined pose. Its ``shift_mm`` is near 0 when the depth has settled (a
    pose stuck at a wrong depth is pulled several mm, and the estimator refuses it; moves
    under DEPTH_SETTLE_MM are not applied); its ``radial_distortion`` is the mean over every
    magnification search of the refinement."""

    T_ct_source: Float[np.ndarray, "4 4"]
    score_initial: float
    score: float
    check: DepthMatch


def field_mask(image: Float[torch.Tensor, "H W"]) -> Float[torch.Tensor, "H W"]:
    """1 inside the collimated field, 0 outside: pixels above the frame's minimum (the
    collimator's flat value), shrunk by one pixel so that resampled edges are out too."""
    lo, hi = image.min(), image.max()
    inside = (image > lo + 1e-6 * (hi - lo)).float()
    return -F.max_pool2d(-inside[None, None], 3, 1, 1)[0, 0]


def masked_ncc(a: Float[torch.Tensor, "B H W"], b: Float[torch.Tensor, "B H W"], mask: Float[torch.Tensor, "H W"]) -> Float[torch.Tensor, "B"]:
    """NCC over the pixels where ``mask`` is 1 (1 = identical up to scale and offset)."""
    n = mask.sum().clamp_min(1.0)
    a = a - (a * mask).sum((-2, -1), keepdim=True) / n
    b = b - (b * mask).sum((-2, -1), keepdim=True) / n
    num = (a * b * mask).sum((-2, -1))
    return num / (((a * a * mask).sum((-2, -1)) * (b * b * mask).sum((-2, -1))).sqrt() + 1e-12)


def gradient_ncc(a: Float[torch.Tensor, "B H W"], b: Float[torch.Tensor, "B H W"], mask: Float[torch.Tensor, "H W"]) -> Float[torch.Tensor, "B"]:
    """Mean masked NCC of the central-difference gradients along columns and rows, over the
    pixels whose difference uses only pixels inside ``mask`` (the field's edge is no edge of
    the anatomy)."""
    def gradients(x):
        return x[..., 1:-1, 2:] - x[..., 1:-1, :-2], x[..., 2:, 1:-1] - x[..., :-2, 1:-1]

    inner = mask[1:-1, 1:-1] * mask[1:-1, 2:] * mask[1:-1, :-2] * mask[2:, 1:-1] * mask[:-2, 1:-1]
    (ax, ay), (bx, by) = gradients(a), gradients(b)
    return 0.5 * (masked_ncc(ax, bx, inner) + masked_ncc(ay, by, inner))


def se3_exp(xi: Float[torch.Tensor, "6"]) -> Float[torch.Tensor, "4 4"]:
    """Rigid transform of a rotation vector (rad) and a translation (mm)."""
    omega, v = xi[:3], xi[3:]
    theta = omega.norm()
    K = torch.zeros(3, 3, dtype=xi.dtype)
    K[0, 1], K[0, 2], K[1, 2] = -omega[2], omega[1], -omega[0]
    K = K - K.T
    eye = torch.eye(3, dtype=xi.dtype)
    if theta < 1e-8:
        R = eye + K
    else:
        R = eye + torch.sin(theta) / theta * K + (1 - torch.cos(theta)) / theta**2 * (K @ K)
    top = torch.cat([R, v[:, None]], dim=1)
    return torch.cat([top, torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=xi.dtype)], dim=0)


def _parabola_peak(candidates: np.ndarray, scores: np.ndarray, i: int) -> float:
    """The candidate at best score ``i``, moved to the vertex of the parabola through it and its
    neighbours (evenly spaced candidates)."""
    best = float(candidates[i])
    if 0 < i < len(scores) - 1:
        curvature = scores[i - 1] - 2 * scores[i] + scores[i + 1]
        if curvature < 0:
            best += 0.5 * float(candidates[1] - candidates[0]) * (scores[i - 1] - scores[i + 1]) / curvature
    return best


def _translation(v: Float[np.ndarray, "3"]) -> Float[np.ndarray, "4 4"]:
    T = np.eye(4)
    T[:3, 3] = v
    return T


class Refiner:
    """Refines poses against one CT with nanodrr (differentiable in the pose)."""

    def __init__(self, volume: Volume, device: str | torch.device = "cpu"):
        self.volume = volume
        self.renderer = NanoRenderer(volume.coarsened(REFINE_VOXEL_MM), device, n_samples=REFINE_SAMPLES)

    def _centre_in_source(self, T: Float[np.ndarray, "4 4"]) -> Float[np.ndarray, "3"]:
        return world_to_camera(T, self.volume.center[None])[0]

    def _target(self, image: np.ndarray, K: np.ndarray, width: int, sdd_mm: float):
        h, w = image.shape
        height = max(8, int(round(h * width / w)))
        small, K_small = resize_image(image.astype(np.float32), K, height, width)
        target = torch.as_tensor(small, device=self.renderer.device)
        return target[None], field_mask(target), Detector.from_K(K_small, height, width, sdd_mm)

    def magnification_search(self, T: np.ndarray, image: np.ndarray, K: np.ndarray, sdd_mm: float,
                             samples: int = MAGNIFICATION_SAMPLES) -> tuple[np.ndarray, DepthMatch]:
        """``T`` moved along the ray through the CT centre to where the DRR's magnification
        matches the frame's, and the match (:meth:`match_magnification`)."""
        match = self.match_magnification(T, image, K, sdd_mm, samples)
        return self._moved_along_ray(T, match.shift_mm), match

    def _moved_along_ray(self, T: Float[np.ndarray, "4 4"], shift_mm: float) -> Float[np.ndarray, "4 4"]:
        """``T`` with the source moved ``shift_mm`` towards the CT centre, along the ray through it."""
        ray = self._centre_in_source(T)
        return T @ _translation(shift_mm * ray / np.linalg.norm(ray))

    def match_magnification(self, T: np.ndarray, image: np.ndarray, K: np.ndarray, sdd_mm: float,
                            samples: int = MAGNIFICATION_SAMPLES) -> DepthMatch:
        """How far (mm) to move the source from ``T`` towards the CT centre, along the ray
        through it, for the DRR's magnification to match the frame's. PnP's weak direction is
        depth, which shows only as magnification (a layout shrunk by 3 % reads as a CT ~25 mm
        too far away), and at 64 px that is a fraction of a pixel: here one DRR at 128 px is
        scaled about the CT centre's projection by every candidate factor (scaling an image is
        cheap; rendering it is not), and the best factor, interpolated between candidates,
        says how far to move. ``samples``: ray samples of that DRR. Also how well the DRR at the
        best candidate explains the frame (plain NCC: ``DepthMatch.appearance_ncc``)."""
        target, mask, detector = self._target(image, K, MAGNIFICATION_WIDTH, sdd_mm)
        h, w = target.shape[-2:]
        pad = int(np.ceil(MAGNIFICATION_PAD * w))
        K_wide = detector.K.copy()
        K_wide[:2, 2] += pad
        wide = Detector.from_K(K_wide, h + 2 * pad, w + 2 * pad, sdd_mm)
        centre = torch.as_tensor(project(detector.K, T, self.volume.center[None])[0], dtype=torch.float32)
        rows, cols = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
        pixels = torch.stack([cols, rows], dim=-1).to(self.renderer.device)  # (H, W, 2) x, y
        centre = centre.to(pixels.device)

        def warped(drr, factors, ideal):
            """The wide DRR magnified about the CT centre's projection by each factor, sampled
            at each frame pixel's ideal position (N, H, W, 2)."""
            at = centre + (ideal - centre) / factors[:, None, None, None] + pad
            size = torch.tensor([w + 2 * pad - 1, h + 2 * pad - 1], dtype=torch.float32, device=at.device)
            return F.grid_sample(drr[None].expand(len(ideal), -1, -1, -1), 2 * at / size - 1, align_corners=True)[:, 0]

        with torch.no_grad():
            drr = self.renderer.render(torch.as_tensor(T[None], dtype=torch.float32), wide, samples)
            drr = gaussian_blur(drr[:, None], torch.tensor([MAGNIFICATION_BLUR_PX], device=drr.device))[:, 0]
            factors = torch.as_tensor(MAGNIFICATIONS, dtype=torch.float32, device=drr.device)
            scaled = warped(drr, factors, pixels.expand(len(factors), -1, -1, -1))
            scores = gradient_ncc(scaled, target, mask).cpu().numpy().astype(np.float64)
            i = int(np.argmax(scores))
            appearance = float(masked_ncc(scaled[i : i + 1], target, mask)[0])
            factor = _parabola_peak(MAGNIFICATIONS, scores, i)
            distortion = self._radial_distortion(drr, target, mask, pixels, float(factor), warped)
        # The source moved towards the CT centre by ``shift`` along the ray magnifies it by
        # distance / (distance - shift).
        shift = (1.0 - 1.0 / factor) * np.linalg.norm(self._centre_in_source(T))
        return DepthMatch(float(shift), appearance, distortion)

    @staticmethod
    def _radial_distortion(drr, target, mask, pixels, factor: float, warped) -> float:
        """The pincushion k1 (:data:`DISTORTIONS`) that best explains the frame by the DRR at
        the best magnification: each frame pixel at radius rho (about the image centre) shows
        the ideal point at radius rho / (1 + k1 (rho^2 - mean rho^2 over the field)), so that
        k1 changes how magnification grows with the radius, not the field's mean."""
        h, w = target.shape[-2:]
        middle = torch.tensor([(w - 1) / 2, (h - 1) / 2], device=pixels.device)
        rho2 = ((pixels - middle) ** 2).sum(-1) / (min(h, w) / 2) ** 2
        rho2 = rho2 - (rho2 * mask).sum() / mask.sum().clamp_min(1.0)
        ks = torch.as_tensor(DISTORTIONS, dtype=torch.float32, device=pixels.device)[:, None, None, None]
        ideal = middle + (pixels - middle) / (1.0 + ks * rho2[..., None])
        factors = torch.full((len(DISTORTIONS),), factor, dtype=torch.float32, device=pixels.device)
        scores = gradient_ncc(warped(drr, factors, ideal), target, mask).cpu().numpy().astype(np.float64)
        return float(_parabola_peak(DISTORTIONS, scores, int(np.argmax(scores))))

    def _descend(self, T_start: np.ndarray, target, mask, detector, level: Level, steps: int) -> tuple[np.ndarray, float]:
        """Adam steps from ``T_start``; the best pose seen (the start included) and its score."""
        pivot = self._centre_in_source(T_start)
        C = torch.as_tensor(_translation(pivot), dtype=torch.float32)
        C_inv = torch.as_tensor(_translation(-pivot), dtype=torch.float32)
        T0 = torch.as_tensor(T_start, dtype=torch.float32)
        xi = torch.zeros(6, requires_grad=True)
        opt = torch.optim.Adam([xi], lr=1.0)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, steps))
        scale = torch.tensor([level.lr_rot] * 3 + [level.lr_trans] * 3)
        best_score, best_xi = -np.inf, None
        for _ in range(steps):
            T = T0 @ C @ se3_exp(xi * scale) @ C_inv
            score = gradient_ncc(self.renderer.render(T[None], detector), target, mask)[0]
            if score.item() > best_score:
                best_score, best_xi = score.item(), (xi * scale).detach().double()
            opt.zero_grad()
            (-score).backward()
            opt.step()
            sched.step()
        # composed again in float64, so that the published rotation is orthonormal to 1e-12
        step = se3_exp(best_xi).numpy()
        return T_start @ _translation(pivot) @ step @ _translation(-pivot), best_score

    def refine(
        self,
        image: Float[np.ndarray, "H W"],
        K: Float[np.ndarray, "3 3"],
        T_initial: Float[np.ndarray, "4 4"],
        steps: int = 18,
        sdd_mm: float = 1020.0,
        levels: tuple[Level, ...] = LEVELS,
    ) -> Refinement:
        """Refine ``T_initial`` (camera-to-world, mm) against a frame (attenuation, any
        scale) with intrinsics ``K``; ``steps`` gradient steps split over the levels. Never
        worse than the start by the finest level's score (the best pose seen is kept), then
        moved along the beam where the depth check asks for more than DEPTH_SETTLE_MM."""
        T = np.asarray(T_initial, dtype=np.float64)
        score_initial = score = float("nan")
        distortions = []
        for i, level in enumerate(levels):
            # Depth first, then the rotation and shifts it unlocks; at the second level the
            # search starts from a pose whose rotation is right, and lands nearer the truth.
            if level.search:
                T, match = self.magnification_search(T, image, K, sdd_mm)
                distortions.append(match.radial_distortion)
            target, mask, detector = self._target(image, K, level.width, sdd_mm)
            n = max(1, int(round(steps * level.share)))
            T, score = self._descend(T, target, mask, detector, level, n)
            if i == len(levels) - 1:
                score_initial = self._score(T_initial, target, mask, detector)
                if score_initial >= score:  # the finest level prefers where we began
                    T, score = np.asarray(T_initial, dtype=np.float64), score_initial
        check = self.match_magnification(T, image, K, sdd_mm)
        if abs(check.shift_mm) > DEPTH_SETTLE_MM:
            T = self._moved_along_ray(T, check.shift_mm)
        # The distortion seen from every pose the refinement passed through: a pose can absorb
        # part of a pincushion (tilted and too far away), the same frame seen from the others not.
        distortion = float(np.mean(distortions + [check.radial_distortion]))
        return Refinement(T, score_initial, score, replace(check, radial_distortion=distortion))

    def _score(self, T: np.ndarray, target, mask, detector) -> float:
        with torch.no_grad():
            drr = self.renderer.render(torch.as_tensor(T[None], dtype=torch.float32), detector)
            return float(gradient_ncc(drr, target, mask)[0])
