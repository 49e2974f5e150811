"""The pose covariance's convention and its maths: the perturbation round-trips, and for
landmarks with independent pixel noise the Gauss-Newton covariance is what PnP's errors
actually are (95 % inside the chi-square 95 % region)."""

import numpy as np
import pytest

from rayemb_ros.geometry.camera import project
from rayemb_ros.geometry.covariance import (
    CHI2_6_95, landmark_covariance, mahalanobis_squared, perturbed, pose_error, projection_jacobian,
)
from rayemb_ros.geometry.pnp import solve_pnp
from rayemb_ros.geometry.poses import carm_pose

K = np.array([[900.0, 0.0, 128.0], [0.0, 900.0, 128.0], [0.0, 0.0, 1.0]])


def scene(rng, n=120):
    T = carm_pose(np.zeros(3), 12.0, -8.0, 3.0, 800.0)
    points = rng.uniform(-60, 60, (n, 3))
    return T, points


@pytest.mark.parametrize("seed", range(4))
def test_the_perturbation_round_trips(seed):
    rng = np.random.default_rng(seed)
    T, _ = scene(rng)
    delta = np.concatenate([rng.normal(0, 5, 3), rng.normal(0, 0.02, 3)])
    np.testing.assert_allclose(pose_error(perturbed(T, delta), T), delta, atol=1e-12)
    moved = perturbed(T, delta)
    np.testing.assert_allclose(moved[:3, :3] @ moved[:3, :3].T, np.eye(3), atol=1e-12)


def test_the_jacobian_predicts_small_moves():
    rng = np.random.default_rng(5)
    T, points = scene(rng)
    J = projection_jacobian(K, T, points)
    delta = np.array([0.3, -0.2, 0.5, 2e-4, -1e-4, 3e-4])
    moved = project(K, perturbed(T, delta), points) - project(K, T, points)
    np.testing.assert_allclose(moved.ravel(), J @ delta, atol=2e-3)


def test_the_covariance_is_what_pnp_errors_are():
    """200 noisy landmark sets (sigma 1.5 px): the share of PnP poses inside the 95 % region of
    their own covariance is ~95 %, and a covariance 3 times too small would hold far fewer."""
    rng = np.random.default_rng(7)
    T, points = scene(rng)
    sigma = 1.5
    inside, inside_small = 0, 0
    trials = 200
    for _ in range(trials):
        uv = project(K, T, points) + rng.normal(0, sigma, (len(points), 2))
        pnp = solve_pnp(points, uv, K, threshold_px=20.0)
        C = landmark_covariance(K, pnp.T_ct_source, points, sigma)
        m2 = mahalanobis_squared(pose_error(pnp.T_ct_source, T), C)
        inside += m2 < CHI2_6_95
        inside_small += m2 * 9 < CHI2_6_95
    assert 0.91 <= inside / trials <= 0.99
    assert inside_small / trials < 0.5
