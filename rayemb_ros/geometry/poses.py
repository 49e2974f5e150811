"""C-arm poses and detectors over a documented clinical range.

Reference view: AP with the patient supine in a RAS+ CT. The source sits anterior of the
isocentre and the beam runs posteriorly (camera +z = -Y of the CT); image columns run
towards the patient's left (camera +x = -X) and rows towards the feet (camera +y = -Z), the
usual radiological display. From there:

* LAO/RAO: rotation about the CT's +Z (cranio-caudal) axis through the isocentre;
* cranial/caudal: rotation about the CT's +X (left-right) axis through the isocentre;
* roll: rotation of the detector about the principal ray.

All poses are T_ct_source (camera-to-world, mm), as everywhere in the package.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from jaxtyping import Float
from scipy.spatial.transform import Rotation

from rayemb_ros.geometry.camera import Detector

_AP = np.array([[-1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, -1.0, 0.0]])  # columns: camera x, y, z in ct


@dataclass(frozen=True)
class PoseRange:
    """Half-widths (degrees, mm) and ranges of the clinical pose distribution."""

    lao_deg: float = 30.0
    cran_deg: float = 20.0
    roll_deg: float = 10.0
    sid_mm: tuple[float, float] = (700.0, 900.0)  # source to isocentre
    iso_offset_mm: float = 30.0  # isocentre within +-this of the volume centre, per axis


@dataclass(frozen=True)
class DetectorRange:
    sdd_mm: tuple[float, float] = (900.0, 1200.0)
    width_mm: float = 280.0  # physical detector width; height follows the pixel aspect
    principal_offset_mm: float = 5.0  # principal point within +-this of the centre


def carm_pose(
    isocenter: Float[np.ndarray, "3"], lao_deg: float, cran_deg: float, roll_deg: float, sid_mm: float
) -> Float[np.ndarray, "4 4"]:
    """T_ct_source of a C-arm at the given angles, source ``sid_mm`` from the isocentre."""
    R = (
        Rotation.from_euler("z", lao_deg, degrees=True).as_matrix()
        @ Rotation.from_euler("x", cran_deg, degrees=True).as_matrix()
        @ _AP
        @ Rotation.from_euler("z", roll_deg, degrees=True).as_matrix()
    )
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = np.asarray(isocenter, dtype=np.float64) - sid_mm * R[:, 2]
    return T


def sample_poses(
    rng: np.random.Generator, n: int, center: Float[np.ndarray, "3"], pose_range: PoseRange = PoseRange()
) -> Float[np.ndarray, "n 4 4"]:
    """``n`` poses drawn uniformly over ``pose_range`` around a volume centre."""
    r = pose_range
    out = np.empty((n, 4, 4))
    for i in range(n):
        iso = np.asarray(center) + rng.uniform(-r.iso_offset_mm, r.iso_offset_mm, 3)
        out[i] = carm_pose(
            iso,
            rng.uniform(-r.lao_deg, r.lao_deg),
            rng.uniform(-r.cran_deg, r.cran_deg),
            rng.uniform(-r.roll_deg, r.roll_deg),
            rng.uniform(*r.sid_mm),
        )
    return out


def template_poses(
    n: int, center: Float[np.ndarray, "3"], pose_range: PoseRange = PoseRange()
) -> Float[np.ndarray, "n 4 4"]:
    """``n`` deterministic template poses spread over the angular range (a golden-angle
    spiral over LAO x cranial, mid source distance, no roll)."""
    r = pose_range
    sid = float(np.mean(r.sid_mm))
    i = np.arange(n) + 0.5
    radius = np.sqrt(i / n)
    theta = i * np.pi * (3.0 - np.sqrt(5.0))
    lao = r.lao_deg * 1.1 * radius * np.cos(theta)
    cran = r.cran_deg * 1.1 * radius * np.sin(theta)
    return np.stack([carm_pose(center, a, c, 0.0, sid) for a, c in zip(lao, cran)])


def sample_detector(
    rng: np.random.Generator, height: int, width: int, detector_range: DetectorRange = DetectorRange()
) -> Detector:
    """A detector with square pixels of ``width_mm / width`` and a random SDD and principal point."""
    d = detector_range
    pixel = d.width_mm / width
    return Detector(
        sdd=float(rng.uniform(*d.sdd_mm)),
        height=height,
        width=width,
        delx=pixel,
        dely=pixel,
        x0=float(rng.uniform(-d.principal_offset_mm, d.principal_offset_mm)),
        y0=float(rng.uniform(-d.principal_offset_mm, d.principal_offset_mm)),
    )


def reference_detector(height: int, width: int, detector_range: DetectorRange = DetectorRange()) -> Detector:
    """The mid-range detector used for template banks."""
    d = detector_range
    pixel = d.width_mm / width
    return Detector(sdd=float(np.mean(d.sdd_mm)), height=height, width=width, delx=pixel, dely=pixel)


def extrapolate_pose(
    T_before: Float[np.ndarray, "4 4"], T_last: Float[np.ndarray, "4 4"], ratio: float, pivot_ct: Float[np.ndarray, "3"]
) -> Float[np.ndarray, "4 4"]:
    """Where a pose that moved from ``T_before`` to ``T_last`` is ``ratio`` times that motion
    later (T_ct_source, mm): the motion, a rotation about ``pivot_ct`` and a shift (the C-arm
    turns about the patient), scaled and applied once more to ``T_last``. ``ratio`` 0 is
    ``T_last``; 1 repeats the last motion (a constant velocity, equal frame intervals)."""
    motion = T_last @ np.linalg.inv(T_before)  # in ct: T_last = motion @ T_before
    rotation = Rotation.from_matrix(motion[:3, :3])
    shift = motion[:3, 3] + motion[:3, :3] @ pivot_ct - pivot_ct  # motion(x) = R (x - pivot) + pivot + shift
    scaled = np.eye(4)
    scaled[:3, :3] = Rotation.from_rotvec(rotation.as_rotvec() * ratio).as_matrix()
    scaled[:3, 3] = scaled[:3, :3] @ -pivot_ct + pivot_ct + shift * ratio
    return scaled @ T_last
