"""How sure a pose is: the 6x6 covariance of a small perturbation of a C-arm pose, from its
2D-3D correspondences, in the order and frame ROS's PoseWithCovariance takes.

The perturbation of T_ct_source (camera-to-world, mm) is about the ``ct`` axes: the source's
position moved by ``d`` (mm) and the orientation turned by the rotation vector ``w`` (rad),
``R' = exp([w]x) R``, ``p' = p + d``. The 6-vector is (d_x, d_y, d_z, w_x, w_y, w_z): ROS's
order (x, y, z, rotation about x, y, z), here in mm and rad (the node converts to m).
:func:`pose_error` is the same vector between an estimate and the truth, so that a calibrated
covariance C makes ``e^T C^-1 e`` chi-square with 6 degrees of freedom.
"""

from __future__ import annotations

import numpy as np
from jaxtyping import Float
from scipy.spatial.transform import Rotation

from rayemb_ros.geometry.camera import project

CHI2_6_95 = 12.592  # chi-square, 6 degrees of freedom, 95th percentile
# Central differences: small beside any pose error that matters, large beside float64 noise.
_STEP = np.array([1e-3, 1e-3, 1e-3, 1e-6, 1e-6, 1e-6])  # mm, rad


def perturbed(T: Float[np.ndarray, "4 4"], delta: Float[np.ndarray, "6"]) -> Float[np.ndarray, "4 4"]:
    """``T`` moved by the 6-vector ``delta`` (mm, rad) about the ``ct`` axes."""
    out = np.array(T, dtype=np.float64)
    out[:3, :3] = Rotation.from_rotvec(delta[3:]).as_matrix() @ out[:3, :3]
    out[:3, 3] = out[:3, 3] + delta[:3]
    return out


def pose_error(T_estimate: Float[np.ndarray, "4 4"], T_true: Float[np.ndarray, "4 4"]) -> Float[np.ndarray, "6"]:
    """The 6-vector (mm, rad) that moves ``T_true`` to ``T_estimate`` (:func:`perturbed`)."""
    turn = Rotation.from_matrix(T_estimate[:3, :3] @ T_true[:3, :3].T).as_rotvec()
    return np.concatenate([T_estimate[:3, 3] - T_true[:3, 3], turn])


def projection_jacobian(K: Float[np.ndarray, "3 3"], T: Float[np.ndarray, "4 4"],
                        points_ct: Float[np.ndarray, "N 3"]) -> Float[np.ndarray, "2N 6"]:
    """d(pixels) / d(perturbation) at ``T``: rows u0, v0, u1, v1, ..."""
    columns = []
    for i, step in enumerate(_STEP):
        delta = np.zeros(6)
        delta[i] = step
        ahead = project(K, perturbed(T, delta), points_ct)
        behind = project(K, perturbed(T, -delta), points_ct)
        columns.append(((ahead - behind) / (2 * step)).ravel())
    return np.stack(columns, axis=1)


def landmark_covariance(K: Float[np.ndarray, "3 3"], T: Float[np.ndarray, "4 4"], points_ct: Float[np.ndarray, "N 3"],
                        pixel_sigma: float) -> Float[np.ndarray, "6 6"]:
    """The Gauss-Newton covariance of a pose fitted to landmarks with independent pixel noise
    of ``pixel_sigma`` per coordinate: ``sigma^2 (J^T J)^-1`` (mm, rad)."""
    J = projection_jacobian(K, T, points_ct)
    return pixel_sigma**2 * np.linalg.pinv(J.T @ J)


def mahalanobis_squared(error: Float[np.ndarray, "6"], covariance: Float[np.ndarray, "6 6"]) -> float:
    """``e^T C^-1 e``: below CHI2_6_95 for 95 % of the errors of a calibrated covariance."""
    return float(error @ np.linalg.solve(covariance, error))

