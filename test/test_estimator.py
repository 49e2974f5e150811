"""The estimator's trust checks of a refined pose: against its landmarks, and its depth."""

import numpy as np

from rayemb_ros.camera import project
from rayemb_ros.estimator import landmark_residual_after_scale, refined_distrust
from rayemb_ros.params import Params
from rayemb_ros.poses import carm_pose, reference_detector
from rayemb_ros.refine import Refinement
from rayemb_ros.result import Landmarks


def layout(rng, n=120):
    T = carm_pose(np.zeros(3), 10.0, -5.0, 3.0, 800.0)
    K = reference_detector(256, 256).K
    points = rng.uniform(-80, 80, (n, 3))
    return T, K, points, project(K, T, points)


def landmarks(points, uv):
    return Landmarks(points, uv, np.ones(len(uv)), np.ones(len(uv), dtype=bool))


def test_a_shrunk_layout_is_explained_by_the_right_pose():
    rng = np.random.default_rng(0)
    T, K, points, uv = layout(rng)
    shrunk = K[:2, 2] + 0.97 * (uv - K[:2, 2]) + rng.normal(0, 0.5, uv.shape)  # the encoder's bias + noise
    residual = landmark_residual_after_scale(T, K, landmarks(points, shrunk))
    assert residual < 1.0


def test_a_pose_pulled_sideways_is_not():
    rng = np.random.default_rng(1)
    T, K, points, uv = layout(rng)
    moved = T.copy()
    moved[:3, 3] += moved[:3, :3] @ np.array([10.0, 0.0, -15.0])  # 10 mm sideways, 15 mm nearer
    residual = landmark_residual_after_scale(moved, K, landmarks(points, uv))
    assert residual > 5.0


def test_a_refined_pose_is_refused_when_its_depth_has_not_settled():
    rng = np.random.default_rng(2)
    T, K, points, uv = layout(rng)
    params = Params()
    settled = Refinement(T, 0.5, 0.9, depth_check_mm=0.4)
    assert refined_distrust(settled, K, landmarks(points, uv), 1.0, params) == ""
    # the landmarks cannot tell (a pure depth error reads as a scale), the depth check can
    unsettled = Refinement(T, 0.5, 0.9, depth_check_mm=-2 * params.max_depth_check_mm)
    assert "depth has not settled" in refined_distrust(unsettled, K, landmarks(points, uv), 1.0, params)
    sideways = T.copy()
    sideways[:3, 3] += sideways[:3, :3] @ np.array([10.0, 0.0, 0.0])
    assert "disagrees with the landmarks" in refined_distrust(
        Refinement(sideways, 0.5, 0.9, 0.0), K, landmarks(points, uv), 1.0, params)
