"""New patients made from the CTs in reach: random, smooth, plausible variants of a CT.

Few CTs are at hand, and an encoder that has seen one anatomy does not register another, so
training and evaluation draw new patients from each CT. A variant is defined by where each
of its points comes from in the source CT: its world point y (mm, the variant's own ``ct``)
takes the source's HU at

    x = T(y) = A(y) + D(A(y)),

where ``A`` is affine (the patient rotated in the scanner and scaled per axis about the CT
centre, the scanner's origin moved) and ``D`` a smooth displacement of a few mm (the
patient's own shape), small enough that ``T`` can be inverted: ``carry`` takes points of
the source CT (landmarks, beads, a label's centroid) to where the variant shows them. On top:
bone density and soft-tissue HU changed, optional metal (screws, plates) in the bone, and the
field of view cropped (a truncated scan). Left-right mirroring is for evaluation only: a
mirrored CT is an anatomy the encoder never saw, and training must not see it.

All in torch (``grid_sample``), so that training can make a new patient per batch on the GPU;
the same seed makes the same patient anywhere.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float
from scipy.ndimage import map_coordinates
from scipy.spatial.transform import Rotation

from rayemb_ros.geometry.volume import BONE_HU, Volume

AIR_HU = -1000.0
METAL_HU = 3000.0
# T(y) is computed exactly on every COARSE_STRIDE-th voxel and interpolated between: D varies
# over tens of mm, so the interpolation errs by far less than a voxel, at a 1/64 of the cost.
COARSE_STRIDE = 4


@dataclass(frozen=True)
class AnatomyRange:
    """How far a variant may depart from its source (each drawn uniformly within +-, or in the range)."""

    deformation_mm: float = 6.0  # peak of the smooth displacement, per axis
    deformation_nodes: int = 4  # control points per axis over the CT (fewer = smoother)
    scale: tuple[float, float] = (0.9, 1.1)  # per axis: patient size
    rotation_deg: float = 6.0  # per axis: the patient turned in the scanner
    origin_shift_mm: float = 40.0  # per axis: the scanner's origin moved
    bone_density: tuple[float, float] = (0.8, 1.2)  # bone HU above BONE_HU scaled by this
    soft_tissue_hu: float = 30.0  # soft tissue (-200..200 HU) shifted by up to this
    crop_fraction: float = 0.15  # up to this share of the slices cut off at each end
    screws: tuple[int, int] = (1, 4)  # with metal: how many screws ...
    plates: tuple[int, int] = (0, 2)  # ... and plates


@dataclass(frozen=True)
class Recipe:
    """Everything a variant was drawn with (written beside it as JSON)."""

    seed: int
    mirror: bool
    metal: bool
    scale: tuple[float, float, float]
    rotation_deg: tuple[float, float, float]
    origin_shift_mm: tuple[float, float, float]
    bone_density: float
    soft_tissue_hu: float
    crop_slices: tuple[int, int]  # slices cut off at the start and the end of the last voxel axis

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Variant:
    """A new patient: ``volume`` (and ``labels``, when the source had a label map) and the
    map between its world frame and its source's."""

    def __init__(self, source: Volume, recipe: Recipe, A: Float[np.ndarray, "4 4"],
                 nodes: Float[np.ndarray, "3 n n n"], labels: np.ndarray | None = None,
                 metal: list[tuple[np.ndarray, np.ndarray, float]] | None = None):
        self.source, self.recipe, self.A, self._nodes = source, recipe, A, nodes
        self._metal = metal or []
        self.volume, self.labels = self._resample(labels)

    # ------------------------------------------------------------------------ the map
    def displacement(self, x: Float[np.ndarray, "N 3"]) -> Float[np.ndarray, "N 3"]:
        """D at source world points (mm): a cubic spline through the control nodes, which
        span the source's voxel grid."""
        ijk = self.source.ct_to_voxels(np.asarray(x, dtype=np.float64))
        n = self._nodes.shape[-1]
        at = (ijk / (np.array(self.source.shape) - 1) * (n - 1)).T  # node coordinates
        return np.stack([map_coordinates(self._nodes[a], at, order=3, mode="nearest") for a in range(3)], -1)

    def to_source(self, y: Float[np.ndarray, "N 3"]) -> Float[np.ndarray, "N 3"]:
        """Where variant points (mm, variant ``ct``) come from in the source (mm, source ``ct``;
        of its mirrored copy, which keeps the same affine, for a mirrored variant): T(y)."""
        u = np.asarray(y, dtype=np.float64) @ self.A[:3, :3].T + self.A[:3, 3]
        return u + self.displacement(u)

    def carry(self, x: Float[np.ndarray, "N 3"], iterations: int = 30) -> Float[np.ndarray, "N 3"]:
        """Where source points (mm, source ``ct``) lie in the variant: T^-1 by fixed-point
        iteration on u + D(u) = x (a contraction: D's slope is far below 1)."""
        x = np.asarray(x, dtype=np.float64)
        if self.recipe.mirror:
            x = self.source.mirror_points(x)
        u = x.copy()
        for _ in range(iterations):
            u = x - self.displacement(u)
        A_inv = np.linalg.inv(self.A)
        return u @ A_inv[:3, :3].T + A_inv[:3, 3]

    # ------------------------------------------------------------------------ the image
    def _resample(self, labels: np.ndarray | None) -> tuple[Volume, np.ndarray | None]:
        src = self.source.mirrored() if self.recipe.mirror else self.source
        k0, k1 = self.recipe.crop_slices
        shape = (src.shape[0], src.shape[1], src.shape[2] - k0 - k1)
        affine = self.source.affine.copy()
        affine[:3, 3] = self.source.voxels_to_ct(np.array([[0.0, 0.0, k0]]))[0] + self.recipe.origin_shift_mm
        grid = self._sampling_grid(shape, affine)
        hu = _sample(torch.from_numpy(np.ascontiguousarray(src.hu, dtype=np.float32)), grid, "bilinear", AIR_HU)
        hu = _change_tissue(hu, self.recipe.bone_density, self.recipe.soft_tissue_hu)
        volume = Volume(np.ascontiguousarray(hu.numpy()), affine, f"{self.source.source} (variant, seed {self.recipe.seed})")
        for start, end, radius in self._metal:
            _add_rod(volume, self.carry(start[None])[0], self.carry(end[None])[0], radius)
        if labels is not None:
            if self.recipe.mirror:
                labels = labels[::-1]
            labels = _sample(torch.from_numpy(np.ascontiguousarray(labels, dtype=np.float32)), grid, "nearest", 0.0)
            labels = np.ascontiguousarray(labels.numpy().round().astype(np.int16))
        return volume, labels

    def _sampling_grid(self, shape: tuple[int, int, int], affine: np.ndarray) -> torch.Tensor:
        """grid_sample coordinates of T(y) for every variant voxel: exact on a coarse lattice
        (corners included), trilinear between."""
        coarse = [np.linspace(0, n - 1, max(2, (n - 1) // COARSE_STRIDE + 1)) for n in shape]
        ijk = np.stack(np.meshgrid(*coarse, indexing="ij"), -1).reshape(-1, 3)
        y = ijk @ affine[:3, :3].T + affine[:3, 3]
        ijk_src = self.source.ct_to_voxels(self.to_source(y))  # the mirrored copy has the same affine
        normalised = 2 * ijk_src / (np.array(self.source.shape) - 1) - 1  # i, j, k in [-1, 1]
        lattice = torch.from_numpy(normalised[:, ::-1].copy()).float().reshape(*[len(c) for c in coarse], 3)
        full = F.interpolate(lattice.permute(3, 0, 1, 2)[None], size=shape, mode="trilinear", align_corners=True)
        return full[0].permute(1, 2, 3, 0)[None]  # 1 I J K 3, last axis (k, j, i) as grid_sample wants


def _sample(array: torch.Tensor, grid: torch.Tensor, mode: str, outside: float) -> torch.Tensor:
    """``array`` (I J K) at the grid's points; ``outside`` beyond the array."""
    shifted = array - outside  # grid_sample pads with zeros
    out = F.grid_sample(shifted[None, None], grid, mode=mode, padding_mode="zeros", align_corners=True)
    return out[0, 0] + outside


def _change_tissue(hu: torch.Tensor, bone_density: float, soft_shift: float) -> torch.Tensor:
    """Bone above BONE_HU scaled in density; soft tissue (-200..200 HU) shifted."""
    bone = hu > BONE_HU
    out = torch.where(bone, BONE_HU + (hu - BONE_HU) * bone_density, hu)
    soft = (hu > -200) & (hu < 200)
    return torch.where(soft, out + soft_shift, out)


def _add_rod(volume: Volume, start: np.ndarray, end: np.ndarray, radius_mm: float) -> None:
    """Metal (METAL_HU) in the voxels within ``radius_mm`` of the segment start..end (mm, ``ct``):
    a screw (round) or, with a few side by side, a plate."""
    lo = np.floor(volume.ct_to_voxels(np.minimum(start, end)[None] - radius_mm - 2)[0]).astype(int)
    hi = np.ceil(volume.ct_to_voxels(np.maximum(start, end)[None] + radius_mm + 2)[0]).astype(int)
    lo, hi = np.minimum(lo, hi), np.maximum(lo, hi)
    lo, hi = np.clip(lo, 0, np.array(volume.shape) - 1), np.clip(hi + 1, 0, np.array(volume.shape))
    if (hi <= lo).any():
        return
    ijk = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij"), -1).reshape(-1, 3)
    p = volume.voxels_to_ct(ijk.astype(np.float64))
    axis = end - start
    t = np.clip(((p - start) @ axis) / max(axis @ axis, 1e-9), 0.0, 1.0)
    inside = np.linalg.norm(p - (start + t[:, None] * axis), axis=1) <= radius_mm
    i, j, k = ijk[inside].T
    volume.hu[i, j, k] = METAL_HU


def _metal(rng: np.random.Generator, source: Volume, r: AnatomyRange) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """Screws and plates in the source's bone (source ``ct``; carried into the variant later)."""
    bone = np.argwhere(source.hu >= BONE_HU + 200)
    if len(bone) == 0:
        return []
    rods = []
    for _ in range(int(rng.integers(r.screws[0], r.screws[1] + 1))):  # 2-3.5 mm screws, 25-50 mm long
        centre = source.voxels_to_ct(bone[rng.integers(len(bone))][None].astype(float))[0]
        direction = rng.normal(size=3)
        half = 0.5 * rng.uniform(25.0, 50.0) * direction / np.linalg.norm(direction)
        rods.append((centre - half, centre + half, float(rng.uniform(1.0, 1.75))))
    for _ in range(int(rng.integers(r.plates[0], r.plates[1] + 1))):  # plates: 3 rods side by side, 60-100 mm
        centre = source.voxels_to_ct(bone[rng.integers(len(bone))][None].astype(float))[0]
        along, side = np.linalg.qr(rng.normal(size=(3, 2)))[0].T
        half = 0.5 * rng.uniform(60.0, 100.0) * along
        rods += [(centre - half + s * side, centre + half + s * side, 1.2) for s in (-2.4, 0.0, 2.4)]
    return rods


def make_variant(source: Volume, seed: int, mirror: bool = False, metal: bool = False,
                 labels: np.ndarray | None = None, anatomy_range: AnatomyRange = AnatomyRange()) -> Variant:
    """A new patient drawn from ``source`` with ``seed`` (deterministic). ``labels``: the
    source's label map (same grid), resampled with it."""
    r = anatomy_range
    rng = np.random.default_rng([seed, 0xA7])
    scale = rng.uniform(*r.scale, size=3)
    rotation = rng.uniform(-r.rotation_deg, r.rotation_deg, size=3)
    shift = rng.uniform(-r.origin_shift_mm, r.origin_shift_mm, size=3)
    n_k = source.shape[2]
    crop = tuple(int(c) for c in rng.integers(0, int(r.crop_fraction * n_k) + 1, size=2))
    recipe = Recipe(seed, mirror, metal, tuple(map(float, scale)), tuple(map(float, rotation)), tuple(map(float, shift)),
                    float(rng.uniform(*r.bone_density)), float(rng.uniform(-r.soft_tissue_hu, r.soft_tissue_hu)),
                    crop)
    # A: variant world -> source world before D: undo the origin shift, then turn and scale
    # about the CT centre (a bigger patient: the variant's mm map to fewer source mm).
    centre = source.center
    M = Rotation.from_euler("xyz", rotation, degrees=True).as_matrix() @ np.diag(1.0 / scale)
    A = np.eye(4)
    A[:3, :3] = M
    A[:3, 3] = centre - M @ (centre + shift)
    n = r.deformation_nodes
    nodes = rng.uniform(-r.deformation_mm, r.deformation_mm, size=(3, n, n, n))
    rods = _metal(rng, source, r) if metal else []  # in the source's bone; ``carry`` takes them over
    return Variant(source, recipe, A, nodes, labels, rods)
