"""Realistic fluoroscopy from a clean DRR, so that test frames are never a renderer's exact output.

Input: an attenuation line-integral image L >= 0 (what a DRR renderer gives, any unit).
The detector model, per pixel:

1. optical depth ``L * scale``, with ``scale`` chosen so the densest ray reaches
   ``style.optical_depth`` (renderers differ in units; the physics needs a depth of a few);
2. incident flux ``N0 * (1 + heel * x)`` (the anode heel effect: a gradient along columns);
3. photon noise ``counts = Poisson(flux * exp(-L * scale))`` plus Gaussian read noise;
4. detector blur (Gaussian, the scintillator's light spread: it blurs the noise too);
5. dynamic-range truncation: counts saturate at ``saturation * N0``;
6. output: ``transmission`` = ``gain * counts`` (raw detector signal), or ``attenuation`` =
   ``gain * window(-log(counts / N0)) ** gamma`` (a displayed frame: brighter = more
   attenuation, arbitrary scale). Both come from the same counts, so with the same style and
   seed one is a decreasing function of the other;
7. collimation: a circular iris and rectangular shutters; the image is 0 outside them
   (off-centre shutters also truncate the anatomy).

``apply`` (numpy/opencv, one H x W frame) and ``apply_batch`` (torch, B x 1 x H x W, for
training augmentation) run the same ``_pipeline`` through two small array backends.
"""

from __future__ import annotations

import math
from dataclasses import astuple, dataclass, fields

import cv2
import numpy as np
import torch
from jaxtyping import Float

from rayemb_ros.params import IMAGE_INTENSITIES

# Counts are floored here before the log: below one photon the log would be noise.
_MIN_COUNTS = 0.5


@dataclass(frozen=True)
class FluoroStyle:
    """One frame's acquisition and display settings. Ranges: what ``sample_style`` draws.

    The defaults are a clean, high-dose, unprocessed frame (no blur, no shutters).
    """

    # Unattenuated photons per pixel, N0 (log-uniform 300 .. 30000: low-dose fluoro .. radiograph).
    dose: float = 1e5
    # Optical depth of the densest ray (2.5 .. 5: transmission exp(-5) = 0.7 % behind the spine).
    optical_depth: float = 4.0
    # Anode heel effect: relative flux change from the image centre to the right edge (-0.15 .. 0.15).
    heel: float = 0.0
    # Electronic read noise, in photons (0 .. 3).
    read_noise: float = 0.0
    # Detector blur, Gaussian sigma in pixels (0.3 .. 1.5).
    blur_sigma: float = 0.0
    # Counts saturate at saturation * N0 (0.6 .. 1.2; < 1 flattens direct exposure).
    saturation: float = math.inf
    # Display window on -log(counts / N0) as fractions of optical_depth: (0 .. 0.15, 0.85 .. 1.2).
    window_low: float = 0.0
    window_high: float = 1.0
    # Display gamma (0.6 .. 1.6).
    gamma: float = 1.0
    # Output gain: ADU per photon (transmission) or display scale (attenuation) (0.5 .. 4).
    gain: float = 1.0
    # Circular iris radius as a fraction of half the smaller image side (0.9 .. 1.3 when
    # present, half the frames; inf = no iris) and its centre offset (fractions of the
    # half-width/half-height, -0.1 .. 0.1).
    iris_radius: float = math.inf
    iris_dx: float = 0.0
    iris_dy: float = 0.0
    # Shutter blades: fractions of the width/height cut at the left, right, top, bottom
    # (0 .. 0.2 each when present, half the frames).
    cut_left: float = 0.0
    cut_right: float = 0.0
    cut_top: float = 0.0
    cut_bottom: float = 0.0


def sample_style(rng: np.random.Generator) -> FluoroStyle:
    """A random style over the ranges documented on ``FluoroStyle``."""
    iris = rng.random() < 0.5
    shutters = rng.random() < 0.5
    cuts = rng.uniform(0.0, 0.2, size=4) if shutters else np.zeros(4)
    return FluoroStyle(
        dose=float(np.exp(rng.uniform(np.log(300.0), np.log(30000.0)))),
        optical_depth=float(rng.uniform(2.5, 5.0)),
        heel=float(rng.uniform(-0.15, 0.15)),
        read_noise=float(rng.uniform(0.0, 3.0)),
        blur_sigma=float(rng.uniform(0.3, 1.5)),
        saturation=float(rng.uniform(0.6, 1.2)),
        window_low=float(rng.uniform(0.0, 0.15)),
        window_high=float(rng.uniform(0.85, 1.2)),
        gamma=float(rng.uniform(0.6, 1.6)),
        gain=float(rng.uniform(0.5, 4.0)),
        iris_radius=float(rng.uniform(0.9, 1.3)) if iris else math.inf,
        iris_dx=float(rng.uniform(-0.1, 0.1)) if iris else 0.0,
        iris_dy=float(rng.uniform(-0.1, 0.1)) if iris else 0.0,
        cut_left=float(cuts[0]),
        cut_right=float(cuts[1]),
        cut_top=float(cuts[2]),
        cut_bottom=float(cuts[3]),
    )


class _NumpyOps:
    """One H x W float32 frame; style fields are Python floats."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    exp = staticmethod(np.exp)
    log = staticmethod(np.log)
    clip = staticmethod(np.clip)

    def image_max(self, x):
        return float(x.max())

    def poisson(self, lam):
        return self.rng.poisson(lam).astype(np.float32)

    def normal_like(self, x):
        return self.rng.standard_normal(x.shape, dtype=np.float32)

    def blur(self, x, sigma):
        # cv2 picks a kernel of about +-3 sigma; sigma 0 would mean "from the kernel size".
        return cv2.GaussianBlur(x, (0, 0), sigma, borderType=cv2.BORDER_REFLECT_101) if sigma > 0 else x

    def grid(self, x):
        h, w = x.shape[-2:]
        return np.arange(h, dtype=np.float32)[:, None], np.arange(w, dtype=np.float32)[None, :]


def gaussian_blur(x: Float[torch.Tensor, "B 1 H W"], sigma: Float[torch.Tensor, "B"]) -> Float[torch.Tensor, "B 1 H W"]:
    """Separable Gaussian (sigma in pixels), one kernel per image: a grouped convolution over
    the batch; edges reflected."""
    radius = max(1, math.ceil(3.0 * float(sigma.max())))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma.reshape(-1, 1).clamp_min(1e-3)) ** 2)
    k = k / k.sum(dim=1, keepdim=True)
    b, _, h, w = x.shape
    y = torch.nn.functional.pad(x.reshape(1, b, h, w), (radius, radius, radius, radius), mode="reflect")
    y = torch.nn.functional.conv2d(y, k.reshape(b, 1, 1, -1), groups=b)
    y = torch.nn.functional.conv2d(y, k.reshape(b, 1, -1, 1), groups=b)
    return y.reshape(b, 1, h, w)


class _TorchOps:
    """A B x 1 x H x W batch; style fields are B x 1 x 1 x 1 tensors."""

    def __init__(self, generator: torch.Generator | None):
        self.generator = generator

    exp = staticmethod(torch.exp)
    log = staticmethod(torch.log)

    def clip(self, x, lo, hi):
        # torch.clamp takes numbers or tensors as bounds, not one of each.
        return torch.clamp(x, *(torch.as_tensor(b, dtype=x.dtype, device=x.device) for b in (lo, hi)))

    def image_max(self, x):
        return x.amax(dim=(-2, -1), keepdim=True)

    def poisson(self, lam):
        return torch.poisson(lam, generator=self.generator)

    def normal_like(self, x):
        return torch.randn(x.shape, generator=self.generator, dtype=x.dtype, device=x.device)

    def blur(self, x, sigma):
        return gaussian_blur(x, sigma)

    def grid(self, x):
        h, w = x.shape[-2:]
        rows = torch.arange(h, dtype=x.dtype, device=x.device)[:, None]
        return rows, torch.arange(w, dtype=x.dtype, device=x.device)[None, :]


def _pipeline(L, s: FluoroStyle, ops, intensity: str, extra_depth=None):
    """The detector model of the module docstring, for either backend (``s`` holds floats
    for numpy, per-image tensors for torch)."""
    if intensity not in IMAGE_INTENSITIES:
        raise ValueError(f"intensity must be one of {IMAGE_INTENSITIES}, got {intensity!r}")
    h, w = L.shape[-2:]
    rows, cols = ops.grid(L)
    x = (cols - (w - 1) / 2.0) / (w / 2.0)  # -1 .. 1 from left to right edge
    scale = s.optical_depth / (ops.image_max(L) + 1e-12)
    flux = s.dose * (1.0 + s.heel * x)
    depth = L * scale if extra_depth is None else L * scale + extra_depth  # + metal in the beam
    counts = ops.poisson(flux * ops.exp(-depth)) + s.read_noise * ops.normal_like(L)
    counts = ops.blur(counts, s.blur_sigma)
    counts = ops.clip(counts, _MIN_COUNTS, s.saturation * s.dose)
    if intensity == "transmission":
        out = s.gain * counts
    else:
        a = -ops.log(counts / s.dose) / s.optical_depth
        a = (a - s.window_low) / (s.window_high - s.window_low)
        out = s.gain * ops.clip(a, 0.0, 1.0) ** s.gamma
    # Collimation: inside the iris and between the shutter blades.
    r = s.iris_radius * (min(h, w) / 2.0)
    cu = (w - 1) / 2.0 + s.iris_dx * w / 2.0
    cv = (h - 1) / 2.0 + s.iris_dy * h / 2.0
    inside = ((cols - cu) ** 2 + (rows - cv) ** 2 <= r**2) & (cols >= s.cut_left * w) & (cols < (1.0 - s.cut_right) * w)
    inside = inside & (rows >= s.cut_top * h) & (rows < (1.0 - s.cut_bottom) * h)
    return out * inside


def apply(
    line_integral: Float[np.ndarray, "H W"],
    style: FluoroStyle,
    rng: np.random.Generator,
    intensity: str = "attenuation",
    extra_depth: Float[np.ndarray, "H W"] | None = None,
) -> Float[np.ndarray, "H W"]:
    """One fluoroscopy frame (float32, >= 0, 0 outside the collimation) from a clean DRR.
    ``extra_depth``: optical depth of what else is in the beam (instruments), before the noise."""
    L = np.asarray(line_integral, dtype=np.float32)
    return np.ascontiguousarray(_pipeline(L, style, _NumpyOps(rng), intensity, extra_depth), dtype=np.float32)


def apply_batch(
    line_integrals: Float[torch.Tensor, "B 1 H W"],
    styles: list[FluoroStyle],
    generator: torch.Generator | None = None,
    intensity: str = "attenuation",
    extra_depth: Float[torch.Tensor, "B 1 H W"] | None = None,
) -> Float[torch.Tensor, "B 1 H W"]:
    """``apply`` over a batch on the batch's device, one style per image (training augmentation).

    ``generator``, when given, must live on that device too; ``extra_depth`` as ``apply``'s.
    """
    if len(styles) != line_integrals.shape[0]:
        raise ValueError(f"{len(styles)} styles for a batch of {line_integrals.shape[0]}")
    L = line_integrals.float()
    values = torch.tensor([astuple(s) for s in styles], dtype=L.dtype, device=L.device)
    stacked = FluoroStyle(*(values[:, i].reshape(-1, 1, 1, 1) for i in range(len(fields(FluoroStyle)))))
    return _pipeline(L, stacked, _TorchOps(generator), intensity, extra_depth)
