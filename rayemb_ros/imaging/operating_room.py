"""Frames as the operating room makes them, on top of ``fluoro``'s detector model: instruments in
the beam, low dose, vendor display processing, and image-intensifier distortion. Each is off by
default and drawn from a stream of its own, so that turning one on leaves every other draw of a
simulated bag as it was.

* **Instruments** (``instrument_depth``): K-wires, screws, plates (three rods side by side) and
  a drill guide (a thick tube), as straight steel or titanium rods in the CT's world frame,
  inside the bone and reaching out of the patient; each pixel's optical depth is the exact
  chord of its ray through each rod times the metal's attenuation, projected with the frame's
  own pose and intrinsics, and added before the photon noise (so that dense metal saturates).
* **Low dose**: 30-300 photons per pixel instead of ``fluoro``'s 300-30000.
* **Display** ``vendor``: an S-shaped look-up table and unsharp-mask edge enhancement on the
  displayed frame; ``inverted``: the same with the polarity some systems show (bone dark).
* **Distortion** (``Distortion``): an image intensifier's pincushion (radial) and S-shaped
  (rotation growing with the radius) distortion at named levels; the exact dewarp model of a
  bag is written beside its frames (``Distortion.save``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import cv2
import numpy as np
from jaxtyping import Float

from rayemb_ros.geometry.camera import Detector, backproject
from rayemb_ros.geometry.volume import BONE_HU, Volume
from rayemb_ros.imaging.fluoro import FluoroStyle

DISPLAYS = ("none", "vendor", "inverted")
# mm^-1, at a fluoroscopy beam's effective energy (~60 keV): steel 7.9 g/cm3 x ~0.2 cm2/g,
# titanium 4.5 g/cm3 x ~0.2 cm2/g. Bone is ~0.05 mm^-1: a 6 mm screw is ~1 optical depth.
STEEL_PER_MM = 0.16
TITANIUM_PER_MM = 0.09


@dataclass(frozen=True)
class Rod:
    """A straight metal rod (mm, ``ct``): a wire, a screw, one bar of a plate, a guide."""

    start: tuple[float, float, float]
    end: tuple[float, float, float]
    radius_mm: float
    per_mm: float  # attenuation (optical depth per mm of chord)


def bone_anchors(volume: Volume) -> Float[np.ndarray, "N 3"]:
    """Where instruments are anchored: the centres of a CT's dense-bone voxels (mm, ``ct``).
    Found once per CT: every frame's instruments are drawn from them."""
    return volume.voxels_to_ct(np.argwhere(volume.hu >= BONE_HU + 200).astype(float))


def sample_instruments(rng: np.random.Generator, anchors: Float[np.ndarray, "N 3"], count: int) -> list[Rod]:
    """``count`` instruments around a CT's bone (``anchors``: :func:`bone_anchors`): K-wires
    reaching out of the patient, screws, plates, drill guides. Some lie partly or wholly
    outside the CT box."""
    rods: list[Rod] = []
    for _ in range(count):
        anchor = anchors[rng.integers(len(anchors))]
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        kind = rng.choice(["wire", "screw", "plate", "guide"], p=[0.35, 0.35, 0.15, 0.15])
        if kind == "wire":  # from the bone out through the skin: 150-250 mm of 1.6-2.4 mm steel
            rods.append(Rod(tuple(anchor), tuple(anchor + rng.uniform(150, 250) * direction),
                            float(rng.uniform(0.8, 1.2)), STEEL_PER_MM))
        elif kind == "screw":  # 30-60 mm, 5-7 mm thread
            half = 0.5 * rng.uniform(30, 60) * direction
            rods.append(Rod(tuple(anchor - half), tuple(anchor + half), float(rng.uniform(2.5, 3.5)),
                            float(rng.choice([STEEL_PER_MM, TITANIUM_PER_MM]))))
        elif kind == "plate":  # 3 bars side by side, 60-120 mm
            side = np.cross(direction, rng.normal(size=3))
            side /= np.linalg.norm(side)
            half = 0.5 * rng.uniform(60, 120) * direction
            rods += [Rod(tuple(anchor - half + s * side), tuple(anchor + half + s * side), 1.5, TITANIUM_PER_MM)
                     for s in (-3.0, 0.0, 3.0)]
        else:  # a drill guide held over the patient: a 10-14 mm tube, 120-200 mm, starting 30-80 mm out
            start = anchor + rng.uniform(30, 80) * direction
            rods.append(Rod(tuple(start), tuple(start + rng.uniform(120, 200) * direction),
                            float(rng.uniform(5.0, 7.0)), 0.4 * STEEL_PER_MM))  # hollow: about 40 % metal
    return rods


def instrument_depth(rods: list[Rod], T_ct_source: Float[np.ndarray, "4 4"], detector: Detector) -> Float[np.ndarray, "H W"]:
    """Optical depth of the rods at every pixel: the exact chord of each pixel's ray (through
    its centre) through each finite cylinder, times its attenuation."""
    h, w = detector.height, detector.width
    vv, uu = np.mgrid[0:h, 0:w]
    origin, dirs = backproject(detector.K, T_ct_source, np.stack([uu.ravel(), vv.ravel()], 1).astype(np.float64))
    depth = np.zeros(h * w)
    for rod in rods:
        a0, a1 = np.asarray(rod.start), np.asarray(rod.end)
        length = np.linalg.norm(a1 - a0)
        axis = (a1 - a0) / length
        w0 = origin - a0
        d_par = dirs @ axis
        d_perp = dirs - d_par[:, None] * axis
        w_perp = w0 - (w0 @ axis) * axis
        qa = (d_perp * d_perp).sum(1)
        qb = 2 * d_perp @ w_perp
        qc = w_perp @ w_perp - rod.radius_mm**2
        disc = qb * qb - 4 * qa * qc
        hit = (disc > 0) & (qa > 1e-12)
        root = np.sqrt(np.where(hit, disc, 0.0))
        t1 = (-qb - root) / np.where(hit, 2 * qa, 1.0)
        t2 = (-qb + root) / np.where(hit, 2 * qa, 1.0)
        # where along the axis: s(t) = w0.axis + t d.axis within [0, length]
        s0 = w0 @ axis
        safe = np.where(np.abs(d_par) > 1e-12, d_par, 1e-12)
        ta, tb = (0.0 - s0) / safe, (length - s0) / safe
        t3, t4 = np.minimum(ta, tb), np.maximum(ta, tb)
        chord = np.clip(np.minimum(t2, t4) - np.maximum(t1, t3), 0.0, None)
        depth += np.where(hit, chord, 0.0) * rod.per_mm
    return depth.reshape(h, w).astype(np.float32)


def low_dose(rng: np.random.Generator) -> float:
    """Photons per unattenuated pixel of a low-dose frame (log-uniform 30 .. 300)."""
    return float(np.exp(rng.uniform(np.log(30.0), np.log(300.0))))


@dataclass(frozen=True)
class Display:
    """A vendor's display processing of the frame (values 0..1 of the displayed range)."""

    contrast: float  # slope of the S-shaped look-up table
    sharpen: float  # unsharp-mask amount
    sigma_px: float  # unsharp-mask radius
    inverted: bool

    @classmethod
    def sample(cls, rng: np.random.Generator, inverted: bool) -> Display:
        return cls(float(rng.uniform(4.0, 9.0)), float(rng.uniform(0.5, 1.5)), float(rng.uniform(1.5, 4.0)), inverted)

    def apply(self, image: Float[np.ndarray, "H W"]) -> Float[np.ndarray, "H W"]:
        field = image > 0  # the collimated field; outside it stays 0 (black), as displays show it
        lo, hi = np.percentile(image[field], [1, 99]) if field.any() else (0.0, 1.0)
        x = np.clip((image - lo) / max(hi - lo, 1e-9), 0, 1)
        x = 1 / (1 + np.exp(-self.contrast * (x - 0.5)))  # S-shaped LUT
        blurred = cv2.GaussianBlur(x.astype(np.float32), (0, 0), self.sigma_px)
        x = np.clip(x + self.sharpen * (x - blurred), 0, 1)
        if self.inverted:
            x = 1 - x
        return np.where(field, x, 0.0).astype(np.float32)


@dataclass(frozen=True)
class Look:
    """What the operating room does to one frame, drawn before it is made: instruments in the
    beam, a dose that replaces the acquisition style's, and the display's processing. The
    default changes nothing."""

    rods: tuple[Rod, ...] = ()
    dose: float | None = None  # photons per unattenuated pixel; None: the style's own
    display: Display | None = None

    def styled(self, style: FluoroStyle) -> FluoroStyle:
        return style if self.dose is None else replace(style, dose=self.dose)

    def metal(self, T_ct_source: Float[np.ndarray, "4 4"], detector: Detector) -> Float[np.ndarray, "H W"] | None:
        """The instruments' optical depth in this frame (``fluoro``'s ``extra_depth``), or None."""
        return instrument_depth(list(self.rods), T_ct_source, detector) if self.rods else None

    def shown(self, image: Float[np.ndarray, "H W"]) -> Float[np.ndarray, "H W"]:
        """The frame as the display shows it."""
        return image if self.display is None else self.display.apply(image)


# Training queries made as an operating room makes them (``TrainConfig.operating_room``): up to
# this many instruments, low dose and the vendor display each half the time. Never the inverted
# display (the appearance gate refuses it by design) and never distortion (a dewarp model
# undoes it before the encoder).
TRAINING_MAX_INSTRUMENTS = 3


def training_look(rng: np.random.Generator, anchors: Float[np.ndarray, "N 3"]) -> Look:
    """The operating room's look for one training query (templates stay clean)."""
    rods = sample_instruments(rng, anchors, int(rng.integers(TRAINING_MAX_INSTRUMENTS + 1)))
    dose = low_dose(rng) if rng.random() < 0.5 else None
    display = Display.sample(rng, inverted=False) if rng.random() < 0.5 else None
    return Look(tuple(rods), dose, display)


DISTORTION_LEVELS = {
    # name: (pincushion k1, S-distortion rad at the edge); edge displacement at 256 px (128 px
    # from the centre): mild 2.6 px radial + 1.3 px sideways (~2.9 px), strong 7.7 + 5.1 (~9.2 px)
    "mild": (0.02, 0.01),
    "strong": (0.06, 0.04),
}


@dataclass(frozen=True)
class Distortion:
    """An image intensifier's distortion: an ideal pixel at normalised radius rho (1 = half the
    smaller image side from the centre) and angle phi shows at radius r (1 + k1 rho^2) and
    angle phi + s rho^2."""

    k1: float
    s: float

    @classmethod
    def level(cls, name: str) -> Distortion:
        return cls(*DISTORTION_LEVELS[name])

    def _polar(self, u, v, height: int, width: int):
        cx, cy, half = (width - 1) / 2.0, (height - 1) / 2.0, min(height, width) / 2.0
        return u - cx, v - cy, half, cx, cy

    def distort(self, u, v, height: int, width: int):
        """Where ideal pixels (u, v) show in the distorted frame."""
        x, y, half, cx, cy = self._polar(u, v, height, width)
        rho2 = (x * x + y * y) / (half * half)
        scale, turn = 1 + self.k1 * rho2, self.s * rho2
        c, s = np.cos(turn), np.sin(turn)
        return cx + scale * (c * x - s * y), cy + scale * (s * x + c * y)

    def undistort(self, u, v, height: int, width: int, iterations: int = 20):
        """The ideal pixel that shows at distorted (u, v): ``distort`` inverted by fixed-point
        iteration (a contraction at these strengths)."""
        iu, iv = np.array(u, dtype=np.float64), np.array(v, dtype=np.float64)
        for _ in range(iterations):
            du, dv = self.distort(iu, iv, height, width)
            iu, iv = iu + (u - du), iv + (v - dv)
        return iu, iv

    def apply(self, image: Float[np.ndarray, "H W"]) -> Float[np.ndarray, "H W"]:
        """The frame as the intensifier shows it."""
        h, w = image.shape
        vv, uu = np.mgrid[0:h, 0:w].astype(np.float64)
        iu, iv = self.undistort(uu, vv, h, w)
        return cv2.remap(image.astype(np.float32), iu.astype(np.float32), iv.astype(np.float32), cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)

    def dewarp_maps(self, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """For every ideal pixel, where it shows in the distorted frame (cv2.remap's maps)."""
        vv, uu = np.mgrid[0:height, 0:width].astype(np.float64)
        du, dv = self.distort(uu, vv, height, width)
        return du.astype(np.float32), dv.astype(np.float32)

    def save(self, path: str | Path, height: int, width: int) -> Path:
        """The dewarp model beside a bag: the grid (map_u, map_v: where each ideal pixel shows
        in the distorted frame) and the model's parameters."""
        map_u, map_v = self.dewarp_maps(height, width)
        np.savez(path, map_u=map_u, map_v=map_v, **{k: np.float64(v) for k, v in asdict(self).items()})
        return Path(path)
