"""The estimator's trust checks: of a PnP pose, and of a refined pose against its landmarks and its depth."""

import numpy as np

from rayemb_ros.camera import project
from rayemb_ros.estimator import landmark_residual_after_scale, pnp_distrust, refined_distrust
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
    assert refined_distrust(settled, T, K, landmarks(points, uv), 1.0, params) == ""
    # the landmarks cannot tell (a pure depth error reads as a scale), the depth check can
    unsettled = Refinement(T, 0.5, 0.9, depth_check_mm=-2 * params.max_depth_check_mm)
    assert "depth has not settled" in refined_distrust(unsettled, T, K, landmarks(points, uv), 1.0, params)
    sideways = T.copy()
    sideways[:3, 3] += sideways[:3, :3] @ np.array([10.0, 0.0, 0.0])
    assert "disagrees with the landmarks" in refined_distrust(
        Refinement(sideways, 0.5, 0.9, 0.0), T, K, landmarks(points, uv), 1.0, params)


def test_the_residual_is_judged_against_the_frames_own_noise():
    """Noisy landmarks leave a right refined pose a large residual; what matters is how much
    worse than the PnP pose it explains them."""
    rng = np.random.default_rng(3)
    T, K, points, uv = layout(rng)
    noisy = landmarks(points, uv + rng.normal(0, 3.0, uv.shape))
    params = Params()
    assert landmark_residual_after_scale(T, K, noisy) > 3.3  # the old absolute bound refused this
    assert refined_distrust(Refinement(T, 0.5, 0.9, 0.0), T, K, noisy, 1.0, params) == ""
    # the same residual increase is refused at any noise level
    sideways = T.copy()
    sideways[:3, 3] += sideways[:3, :3] @ np.array([4.0, 0.0, 0.0])
    clean = landmarks(points, uv)
    increase = landmark_residual_after_scale(sideways, K, clean) - landmark_residual_after_scale(T, K, clean)
    assert increase > params.max_residual_increase_px
    assert "disagrees with the landmarks" in refined_distrust(Refinement(sideways, 0.5, 0.9, 0.0), T, K, clean, 1.0, params)


def test_refinement_may_try_a_pnp_pose_that_could_not_be_published_as_is():
    T, _, _, _ = layout(np.random.default_rng(4))
    centre = np.zeros(3)
    refining, pnp_only = Params(), Params(refine=False)
    inliers = int(0.2 * 250)  # between the two ratios
    assert refining.refine_min_inlier_ratio < 0.2 < pnp_only.min_inlier_ratio
    assert pnp_distrust(T, centre, inliers, 250, 2.0, refining) == ""
    assert "inlier ratio" in pnp_distrust(T, centre, inliers, 250, 2.0, pnp_only)
    assert "too few inliers" in pnp_distrust(T, centre, 20, 250, 2.0, refining)
    assert "reprojection error" in pnp_distrust(T, centre, 200, 250, 9.0, refining)
    assert "no consistent pose" in pnp_distrust(None, centre, 200, 250, 2.0, refining)
