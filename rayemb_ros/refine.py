"""Intensity-based refinement (DiffDRR-style): gradient steps on the pose that raise the
normalised cross-correlation between the frame and a DRR rendered at that pose.

PnP on landmarks is weakest along the beam (depth changes only the magnification);
intensity matching sees the whole image and pins it. The pose is updated on the right,
T = T0 @ exp(xi), so the six parameters live in the source frame: xi[:3] a rotation vector
(rad), xi[3:] a translation (mm) with xi[5] the depth. NCC ignores the intensity scale,
so nothing here assumes one.
"""

from __future__ import annotations

import numpy as np
import torch
from jaxtyping import Float

from .camera import Detector, resize_image
from .render import NanoRenderer
from .volume import Volume

# Working width of the refinement DRRs, ray samples per pixel, and step sizes per parameter
# group (Adam's step is about the learning rate: ~0.2 deg and ~0.5 mm at first).
REFINE_WIDTH = 64
REFINE_SAMPLES = 160
_LR_ROT = 4e-3
_LR_TRANS = 0.6


def _standardise(x: torch.Tensor) -> torch.Tensor:
    x = x - x.mean(dim=(-2, -1), keepdim=True)
    return x / (x.pow(2).mean(dim=(-2, -1), keepdim=True).sqrt() + 1e-8)


def ncc(a: Float[torch.Tensor, "B H W"], b: Float[torch.Tensor, "B H W"]) -> Float[torch.Tensor, "B"]:
    """Normalised cross-correlation of two image batches (1 = identical up to scale and offset)."""
    return (_standardise(a) * _standardise(b)).mean(dim=(-2, -1))


def multiscale_ncc(a: Float[torch.Tensor, "B H W"], b: Float[torch.Tensor, "B H W"], patch: int = 16) -> Float[torch.Tensor, "B"]:
    """Global NCC plus NCC over non-overlapping patches (local contrast matters too)."""
    def patches(x):
        h, w = (x.shape[-2] // patch) * patch, (x.shape[-1] // patch) * patch
        x = x[..., :h, :w].unfold(-2, patch, patch).unfold(-2, patch, patch)
        return x.reshape(*x.shape[:-4], -1, patch, patch)

    return 0.5 * ncc(a, b) + 0.5 * ncc(patches(a), patches(b)).mean(-1)


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


class Refiner:
    """Refines poses against one CT with nanodrr (differentiable in the pose)."""

    def __init__(self, volume: Volume, device: str | torch.device = "cpu"):
        self.volume = volume
        self.renderer = NanoRenderer(volume, device, n_samples=REFINE_SAMPLES)

    def refine(
        self,
        image: Float[np.ndarray, "H W"],
        K: Float[np.ndarray, "3 3"],
        T_initial: Float[np.ndarray, "4 4"],
        steps: int = 40,
        sdd_mm: float = 1020.0,
    ) -> tuple[Float[np.ndarray, "4 4"], float, float]:
        """The refined pose, and the NCC before and after. Never worse than the start: the
        best pose seen is returned."""
        h, w = image.shape
        height = max(8, int(round(h * REFINE_WIDTH / w)))
        small, K_small = resize_image(image.astype(np.float32), K, height, REFINE_WIDTH)
        detector = Detector.from_K(K_small, height, REFINE_WIDTH, sdd_mm)
        target = torch.as_tensor(small, device=self.renderer.device)[None]
        T0 = torch.as_tensor(T_initial, dtype=torch.float32)
        xi = torch.zeros(6, requires_grad=True)
        opt = torch.optim.Adam([{"params": [xi], "lr": 1.0}])
        scale = torch.tensor([_LR_ROT] * 3 + [_LR_TRANS] * 3)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, steps))
        best = (-np.inf, T_initial)
        first = None
        for _ in range(steps):
            T = T0 @ se3_exp(xi * scale)
            drr = self.renderer.render(T[None], detector)
            score = multiscale_ncc(drr, target)[0]
            value = score.item()
            if first is None:
                first = value
            if value > best[0]:
                best = (value, T.detach().double().numpy())
            opt.zero_grad()
            (-score).backward()
            opt.step()
            sched.step()
        return best[1], first, best[0]
