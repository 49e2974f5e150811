"""The published covariance: the landmark fit's, calibrated by a factor for every direction
and one more along the beam through the CT centre."""

import numpy as np

from rayemb_ros.estimation.result import Landmarks
from rayemb_ros.estimation.uncertainty import (
    DEPTH_SEARCHED, LANDMARKS_ONLY, REFINED, Calibration, covariance_calibration, depth_direction, pose_covariance,
)
from rayemb_ros.geometry.camera import project, world_to_camera
from rayemb_ros.geometry.poses import carm_pose
from rayemb_ros.params import Params

K = np.array([[900.0, 0.0, 128.0], [0.0, 900.0, 128.0], [0.0, 0.0, 1.0]])
CENTRE = np.array([5.0, -10.0, 20.0])


def fitted():
    rng = np.random.default_rng(0)
    T = carm_pose(CENTRE, 20.0, 10.0, 0.0, 750.0)
    points = CENTRE + rng.uniform(-60, 60, (150, 3))
    return T, Landmarks(points, project(K, T, points), np.ones(150), np.ones(150, bool))


def test_the_depth_direction_moves_the_source_along_its_ray_to_the_ct_centre():
    T, _ = fitted()
    v = depth_direction(T, CENTRE)
    assert np.linalg.norm(v) == 1.0 and not v[3:].any()
    moved = T.copy()
    moved[:3, 3] += 10.0 * v[:3]
    # the centre stays on the principal ray, 10 mm nearer
    before, after = world_to_camera(T, CENTRE[None])[0], world_to_camera(moved, CENTRE[None])[0]
    np.testing.assert_allclose(np.cross(before, after), 0.0, atol=1e-6)
    assert abs(np.linalg.norm(before) - np.linalg.norm(after) - 10.0) < 1e-9


def test_the_calibration_scales_every_direction_and_the_depth_once_more():
    T, landmarks = fitted()
    raw = pose_covariance(K, T, landmarks, 2.0, CENTRE, Calibration(1.0, 1.0))
    scaled = pose_covariance(K, T, landmarks, 2.0, CENTRE, Calibration(2.0, 1.0))
    np.testing.assert_allclose(scaled, 4.0 * raw)
    v = depth_direction(T, CENTRE)
    deeper = pose_covariance(K, T, landmarks, 2.0, CENTRE, Calibration(1.0, 0.5))
    assert v @ deeper @ v < 0.3 * (v @ raw @ v)  # the depth variance shrinks by ~0.25 ...
    for u in np.eye(6)[3:]:  # ... and every direction across it keeps its variance (rotations)
        assert abs(u @ v) < 1e-12 and np.isclose(u @ deeper @ u, u @ raw @ u, rtol=1e-9)


def test_each_way_of_reaching_a_pose_has_its_calibration():
    assert covariance_calibration(Params()) is REFINED
    assert covariance_calibration(Params(refine=False)) is DEPTH_SEARCHED
    assert covariance_calibration(Params(refine=False, depth_search=False)) is LANDMARKS_ONLY
