"""The public DeepFluoro dataset (Grupp et al., IPCAI 2020) in this project's conventions.

Reads ``ipcai_2020_full_res_data.h5`` and returns each specimen's CT as a :class:`Volume`
in its own RAS+ world (``ct``), and each fluoroscopy frame as an attenuation image with
its ``K`` and ``T_ct_source`` in the conventions of ``geometry/camera.py`` (../shared/CONTRACT.md).

What the file stores, and where each convention comes from
-----------------------------------------------------------
[G] = Grupp's dataset documentation and scripts, rg2/DeepFluoroLabeling-IPCAI2020
(``hdf5_layouts/Readme.md``, ``examples_dataset/full_res_3d_viz.py``,
``examples_dataset/make_full_res_overlays.py``); [X] = Grupp's registration library
rg2/xreg; [D] = DiffPose (eigenvivek/DiffPose ``diffpose/deepfluoro.py``), whose reader
RayEmb (Pragyanstha/rayemb ``rayemb/dataset/deepfluoro.py``) copies.

* Volumes are ITK images [G]: ``pixels`` is row-major, so ``pixels[k, j, i]`` is ITK index
  (i, j, k) = (column, row, slice); its centre is ``origin + dir-mat @ (spacing * [i, j, k])``
  in LPS mm. ``ct`` is RAS+, so x and y change sign. ``vol-landmarks`` are LPS mm [G].
* ``proj-params/extrinsic`` maps the camera *world* frame into the *projective* frame;
  ``intrinsic`` maps the projective frame onto the image: ``[col, row, 1] ~ intrinsic @ p``
  [G, full_res_3d_viz.py]. The projective frame has its origin at the X-ray source, +X
  along columns, +Y along rows and **+Z pointing towards the source** [G], so points in
  front have Z < 0 and the intrinsic's focal entries are negative (xreg's
  ``kORIGIN_AT_FOCAL_PT_DET_NEG_Z`` camera, [X] ``xregCIOSFusionDICOM.cpp``). Pixel
  coordinates are ITK indices: pixel centres at integers, as in OpenCV [G: rot-180 maps
  c -> num_cols - 1 - c].
* ``gt-poses/cam-to-pelvis-vol`` maps the camera world frame into the pelvis volume's
  LPS frame: a CT point X projects through ``extrinsic @ inv(cam-to-pelvis-vol) @ X``
  [G, full_res_3d_viz.py]. The stored ``gt-landmarks`` (column, row) are that projection
  of ``vol-landmarks`` with the *stored* pose, in the stored (un-rotated) image, for every
  frame including the flagged ones (Grupp's paper: "projected 3D annotations"; a
  third-party check on the real file reprojects all 366 frames to 6e-4 px mean).
* xreg corrects the stored pose by -0.5 mm along each LPS axis before rendering,
  ``cam_to_pelvis = T(-0.5, -0.5, -0.5) @ cam_to_pelvis`` ([X]
  ``xreg_sample_single_view_regi_2d_3d_main.cpp``: "an inconsistency with linear
  interpolation texture indexing between when the ground truth was constructed and
  now"). Our reading: the pose was found by intensity registration with a ray caster
  that drew voxel i at index i + 0.5; today's xreg ray caster, like ours, puts voxel
  centres at ``origin + i * spacing`` ([X] ``xregRayCastLineIntOCL.cpp`` adds the 0.5
  texel offset itself). So the corrected pose is the one under which our renderer
  reproduces the image, and it is the default here (``half_voxel_correction``). DiffPose
  and RayEmb do not apply it. The stored 2D landmarks match the *uncorrected* pose: with
  the correction they sit a few pixels (about 6 of 1536, up to 10; ~1 mm on the
  detector) from ``project(K, T_ct_source, X)``: they carry the old half-voxel shift.
* ``rot-180-for-up`` flags frames that must be turned by 180 degrees to show the patient
  head-up; the stored pose and landmarks belong to the stored, un-rotated image [G:
  the overlay script rotates image and landmarks itself; D: rotates the image and the
  pose about the principal ray].
* Images are raw detector intensities (bone dark) [G: only the preprocessed files are
  inverted]. Readers crop a 50-pixel border to drop the collimator edge and take
  ``log(I0) - log(I)`` [D ``preprocess``: centre crop 1536 -> 1436, I0 = 65487; X uses
  the image maximum as I0]. DiffPose also blurs and min-max scales; we do neither.

How they become ours
--------------------
* Handedness: DeepFluoro's frame (X columns, Y rows, Z to the source) is a proper,
  right-handed rotation away from LPS (its extrinsic and poses are rotations), so in the
  stored image columns x rows points *away* from the detector: the image is the
  radiological view, as if looking from the detector at the source. ``carm_source`` (x
  columns, y rows, z to the detector) would need a mirror, not a rotation. So every
  image is mirrored left-right (columns reversed); with that, q = diag(-1, 1, -1) p is a
  rotation and ``T_ct_source`` is rigid. (Third-party readers that fit the stored
  landmarks by PnP with a positive-focal K have had to swap two world axes: the same
  reflection.)
* Then the 50-pixel border is cropped, and frames flagged ``rot-180-for-up`` are turned
  by 180 degrees (together with the mirror: a top-bottom flip). Each step is an exact
  pixel map u' = s (u - border) + offset, applied alike to the image, the 2D landmarks
  and ``K``; a sign flip of the pixel axis flips the matching camera axis, so ``K``
  keeps positive focal lengths and the pose turns about the principal ray.
* Images become attenuation: ``log(max I) - log(I)`` over the cropped frame, so bone is
  bright and the brightest detector pixel is 0.

The mirror means that in an AP view shown head-up (source behind the patient) the
patient's left is on the image's left, unlike the radiological display of the files.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from jaxtyping import Float

from rayemb_ros.errors import InputError
from rayemb_ros.geometry.camera import invert_pose
from rayemb_ros.geometry.volume import Volume

# The RayEmb paper's specimens 1-6 (and DiffPose's ``id_number``), in that order.
SPECIMENS = ("17-1882", "18-1109", "18-0725", "18-2799", "18-2800", "17-1905")
# vol-seg labels rigidly attached to the pelvis, whose pose the ground truth is: hemipelves,
# vertebra, upper and lower sacrum (the femurs, 5 and 6, move on their own) [X: the lut of
# xreg_sample_single_view_regi_2d_3d_main.cpp].
PELVIS_LABELS = (1, 2, 3, 4, 7)
AIR_HU = -1000.0
CROP_BORDER = 50  # pixels; DiffPose's centre crop 1536 -> 1436
HALF_VOXEL_MM = 0.5  # xreg's correction of cam-to-pelvis-vol, in LPS mm

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])  # its own inverse


class DeepFluoroError(InputError, ValueError):
    """A file that does not follow the DeepFluoro layout or conventions; the message says how."""


@dataclass(frozen=True)
class DeepFluoroFrame:
    """One fluoroscopy frame in our conventions.

    ``image`` is attenuation (bright = dense): cropped, mirrored to our handedness, and turned
    head-up where the file flags it. ``K`` and ``landmarks_2d`` (name -> (u, v), OpenCV
    pixels) belong to that image; ``T_ct_source`` is the ground-truth pose (``carm_source``
    -> ``ct``, mm). Landmarks can lie outside the image: DeepFluoro keeps all 14 in every frame.
    """

    index: int
    image: Float[np.ndarray, "H W"]
    K: Float[np.ndarray, "3 3"]
    T_ct_source: Float[np.ndarray, "4 4"]
    landmarks_2d: dict[str, Float[np.ndarray, "2"]]
    rot_180_for_up: bool


@dataclass(frozen=True)
class _PixelMap:
    """u' = sx * (u - border) + ox, v' = sy * (v - border) + oy: crop, mirror, turn."""

    sx: float
    sy: float
    A: Float[np.ndarray, "3 3"]

    @classmethod
    def make(cls, rows: int, cols: int, border: int, rot_180: bool) -> _PixelMap:
        h, w = rows - 2 * border, cols - 2 * border
        # The mirror to our handedness reverses columns; a 180-degree turn reverses both.
        sx, sy = (1.0, -1.0) if rot_180 else (-1.0, 1.0)
        ox = (w - 1.0) if sx < 0 else 0.0
        oy = (h - 1.0) if sy < 0 else 0.0
        A = np.array([[sx, 0.0, ox - sx * border], [0.0, sy, oy - sy * border], [0.0, 0.0, 1.0]])
        return cls(sx, sy, A)

    def image(self, pixels: Float[np.ndarray, "R C"], border: int) -> Float[np.ndarray, "h w"]:
        cropped = pixels[border : pixels.shape[0] - border, border : pixels.shape[1] - border]
        return cropped[:: int(self.sy), :: int(self.sx)]

    def points(self, uv: Float[np.ndarray, "N 2"]) -> Float[np.ndarray, "N 2"]:
        return uv @ self.A[:2, :2].T + self.A[:2, 2]


def _vector(dataset: h5py.Dataset) -> np.ndarray:
    return np.asarray(dataset[()], dtype=np.float64).reshape(-1)


def _attenuation(transmission: Float[np.ndarray, "H W"]) -> Float[np.ndarray, "H W"]:
    """log(I0) - log(I) with I0 the brightest pixel (xreg's choice; the scale is free)."""
    i0 = float(transmission.max())
    if not np.isfinite(i0) or i0 <= 0:
        raise DeepFluoroError("projection has no positive detector values")
    # Dead (zero) pixels would be infinitely dense; cap them at 1e-6 of I0.
    clipped = np.clip(transmission, 1e-6 * i0, None)
    return (np.log(i0) - np.log(clipped)).astype(np.float32)


def _rigid(T: Float[np.ndarray, "4 4"], what: str) -> Float[np.ndarray, "4 4"]:
    """The nearest rigid transform to a stored one that should be rigid (the file keeps ~7 digits,
    and ``T_ct_source`` must be exactly orthonormal); refuses reflections and non-rotations."""
    U, _, Vt = np.linalg.svd(T[:3, :3])
    R = U @ Vt
    if not np.allclose(T[:3, :3], R, atol=1e-4) or np.linalg.det(R) < 0:
        raise DeepFluoroError(f"{what} is not a rotation: the file's frames are not DeepFluoro's")
    out = np.eye(4)
    out[:3, :3], out[:3, 3] = R, T[:3, 3]
    return out


class DeepFluoro:
    """Reader of ``ipcai_2020_full_res_data.h5`` (keeps the file open; use as a context manager).

    ``half_voxel_correction`` applies xreg's -0.5 mm correction to the ground-truth poses
    (see the module notes); ``border`` is the crop on each side, in original pixels.
    """

    def __init__(self, path: str | Path, half_voxel_correction: bool = True, border: int = CROP_BORDER):
        self.path = Path(path)
        self.border = int(border)
        self.half_voxel_correction = half_voxel_correction
        try:
            self._h5 = h5py.File(self.path, "r")
        except OSError as exc:
            raise DeepFluoroError(f"cannot open DeepFluoro file {self.path}: {exc}") from exc
        if "proj-params" not in self._h5:
            self._h5.close()
            raise DeepFluoroError(f"{self.path} has no proj-params group: not the full-resolution DeepFluoro file")
        params = self._h5["proj-params"]
        self.rows = int(params["num-rows"][()])
        self.cols = int(params["num-cols"][()])
        self._intrinsic = np.asarray(params["intrinsic"][()], dtype=np.float64)
        self._extrinsic = _rigid(np.asarray(params["extrinsic"][()], dtype=np.float64), "proj-params/extrinsic")
        if self._intrinsic[0, 0] >= 0 or self._intrinsic[1, 1] >= 0:
            raise DeepFluoroError("proj-params/intrinsic has non-negative focal lengths: not DeepFluoro's +Z-to-source camera")

    def __enter__(self) -> DeepFluoro:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._h5.close()

    @property
    def specimens(self) -> list[str]:
        """Specimen groups in the file, in the paper's order (1-6)."""
        names = [k for k in self._h5 if k != "proj-params"]
        rank = {name: i for i, name in enumerate(SPECIMENS)}
        return sorted(names, key=lambda n: (rank.get(n, len(rank)), n))

    def _specimen(self, specimen: str) -> h5py.Group:
        if specimen not in self._h5 or specimen == "proj-params":
            raise DeepFluoroError(f"no specimen {specimen!r} in {self.path} (have {', '.join(self.specimens)})")
        return self._h5[specimen]

    def _lps_affine(self, image_group: h5py.Group) -> Float[np.ndarray, "4 4"]:
        """ITK index (i, j, k) -> LPS mm."""
        direction = np.asarray(image_group["dir-mat"][()], dtype=np.float64).reshape(3, 3)
        affine = np.eye(4)
        affine[:3, :3] = direction * _vector(image_group["spacing"])[None, :]
        affine[:3, 3] = _vector(image_group["origin"])
        return affine

    def volume(self, specimen: str, pelvis_only: bool = False) -> Volume:
        """The specimen's CT in HU, ``ct`` = its RAS+ world. ``pelvis_only`` sets everything
        but the pelvis (``PELVIS_LABELS`` of ``vol-seg``) to air, as xreg does before registering."""
        group = self._specimen(specimen)
        # pixels[k, j, i] -> hu[i, j, k] (a view, no copy).
        hu = np.asarray(group["vol/pixels"][()], dtype=np.float32).transpose(2, 1, 0)
        if pelvis_only:
            labels = np.asarray(group["vol-seg/image/pixels"][()]).transpose(2, 1, 0)
            if labels.shape != hu.shape:
                raise DeepFluoroError(f"{specimen}: vol-seg shape {labels.shape} differs from vol {hu.shape}")
            hu = np.where(np.isin(labels, PELVIS_LABELS), hu, np.float32(AIR_HU))
        affine = _LPS_TO_RAS @ self._lps_affine(group["vol"])
        return Volume(hu, affine, f"{self.path}:{specimen}{' (pelvis)' if pelvis_only else ''}")

    def landmarks_3d(self, specimen: str) -> dict[str, Float[np.ndarray, "3"]]:
        """The 14 annotated anatomical landmarks in ``ct`` (RAS mm)."""
        group = self._specimen(specimen)["vol-landmarks"]
        return {name: _LPS_TO_RAS[:3, :3] @ _vector(group[name]) for name in group}

    def frame_indices(self, specimen: str) -> list[int]:
        return sorted(int(k) for k in self._specimen(specimen)["projections"])

    def frame(self, specimen: str, index: int) -> DeepFluoroFrame:
        group = self._specimen(specimen)["projections"][f"{index:03d}"]
        rot_180 = bool(group["rot-180-for-up"][()])
        pixels = np.asarray(group["image/pixels"][()], dtype=np.float32)
        if pixels.shape != (self.rows, self.cols):
            raise DeepFluoroError(f"{specimen}/{index:03d}: image {pixels.shape} is not {self.rows}x{self.cols}")
        mapping = _PixelMap.make(self.rows, self.cols, self.border, rot_180)

        stored_pose = np.asarray(group["gt-poses/cam-to-pelvis-vol"][()], dtype=np.float64)
        cam_to_pelvis = _rigid(stored_pose, f"{specimen}/{index:03d} cam-to-pelvis-vol")
        if self.half_voxel_correction:
            cam_to_pelvis[:3, 3] -= HALF_VOXEL_MM
        # Our camera axes from DeepFluoro's projective ones: the pixel map's signs on x and y,
        # and z reversed (towards the detector); a rotation because exactly one of sx, sy is -1.
        ours_from_projective = np.diag([mapping.sx, mapping.sy, -1.0, 1.0])
        T_ct_source = _LPS_TO_RAS @ cam_to_pelvis @ invert_pose(self._extrinsic) @ ours_from_projective
        # [u, v, 1] ~ intrinsic @ p = -intrinsic @ diag(1, 1, -1) @ q0 with q0 = diag(1, 1, -1) p;
        # then the pixel map A and the matching axis signs keep K's focal lengths positive.
        K_unflipped = -self._intrinsic @ np.diag([1.0, 1.0, -1.0])
        K = mapping.A @ K_unflipped @ np.diag([mapping.sx, mapping.sy, 1.0])

        stored = group["gt-landmarks"]
        names = list(stored)
        uv = np.array([_vector(stored[name]) for name in names]).reshape(-1, 2)
        landmarks_2d = dict(zip(names, mapping.points(uv)))
        image = np.ascontiguousarray(_attenuation(mapping.image(pixels, self.border)))
        return DeepFluoroFrame(index, image, K, T_ct_source, landmarks_2d, rot_180)

    def frames(self, specimen: str) -> Iterator[DeepFluoroFrame]:
        """The specimen's frames in index order, read one at a time (each image is 9 MB)."""
        for index in self.frame_indices(specimen):
            yield self.frame(specimen, index)
