"""mTRE, GFR and percentiles on cases with known answers."""

import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from rayemb_ros.geometry.camera import invert_pose
from rayemb_ros.evaluation.metrics import (
    accuracy_summary,
    frame_mtre,
    gfr,
    latency_summary,
    mtre,
    percentile,
    target_points,
)
from rayemb_ros.geometry.volume import Volume


def pose(rotvec_deg=(0.0, 0.0, 0.0), t=(0.0, 0.0, 0.0)) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec(rotvec_deg, degrees=True).as_matrix()
    T[:3, 3] = t
    return T


POINTS = np.random.default_rng(0).uniform(-100, 100, size=(500, 3))
T_GT = pose((20.0, -10.0, 5.0), (10.0, -700.0, 30.0))


def test_identity_is_zero():
    assert mtre(T_GT, T_GT, POINTS) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("d", [0.5, 3.0, 12.0])
def test_a_translation_of_d_mm_is_d(d):
    direction = np.array([1.0, -2.0, 0.5]) / np.linalg.norm([1.0, -2.0, 0.5])
    # A shift of the source in the CT moves every point by the same d in the source frame.
    shifted = T_GT.copy()
    shifted[:3, 3] += d * direction
    assert mtre(shifted, T_GT, POINTS) == pytest.approx(d)
    # ... and so does a shift in the source frame (inv(T_est) = shift @ inv(T_gt)).
    in_source = invert_pose(pose(t=d * direction) @ invert_pose(T_GT))
    assert mtre(in_source, T_GT, POINTS) == pytest.approx(d)


def test_a_rotation_about_the_points_centre():
    """A rotation by a about an axis through the centroid of points on a circle of radius r
    around that axis moves each point by the chord 2 r sin(a / 2)."""
    r, a = 80.0, 3.0
    angles = np.linspace(0, 2 * np.pi, 360, endpoint=False)
    ring = np.stack([r * np.cos(angles), r * np.sin(angles), np.zeros_like(angles)], axis=1)
    T_est = pose((0.0, 0.0, a)) @ T_GT  # rotates the CT's points about the ct z axis through 0
    assert mtre(T_est, T_GT, ring) == pytest.approx(2 * r * np.sin(np.radians(a) / 2))


def test_batched_poses():
    T_est = np.stack([T_GT, T_GT @ pose(t=(0, 0, 4.0))])
    np.testing.assert_allclose(mtre(T_est, T_GT, POINTS), [0.0, 4.0], atol=1e-9)


def test_no_pose_is_an_infinite_error():
    assert frame_mtre(None, T_GT, POINTS) == math.inf
    assert frame_mtre(T_GT, T_GT, POINTS) == pytest.approx(0.0, abs=1e-9)


def test_gfr_counts_frames_over_the_threshold_and_failures():
    errors = [1.0, 4.0, 6.0, 11.0, math.inf]
    assert gfr(errors, 10.0) == pytest.approx(40.0)
    assert gfr(errors, 5.0) == pytest.approx(60.0)
    assert gfr([10.0], 10.0) == 0.0  # "exceeds": equal is not a failure
    assert gfr([math.inf, math.inf], 10.0) == 100.0
    assert math.isnan(gfr([], 10.0))


def test_percentiles_treat_failures_as_worst():
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 50) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 25) == pytest.approx(np.percentile([1, 2, 3, 4], 25))
    # The median of 3 frames, one without a pose, is the larger finite one...
    assert percentile([5.0, math.inf, 1.0], 50) == 5.0
    # ... and the 95th percentile leans on the failure.
    assert percentile([5.0, math.inf, 1.0], 95) == math.inf
    assert math.isnan(percentile([], 50))


def test_accuracy_summary():
    summary = accuracy_summary([1.0, 2.0, 3.0, 20.0, math.inf])
    assert summary["frames_evaluated"] == 5 and summary["frames_posed"] == 4
    assert summary["mtre_mm"]["p50"] == 3.0 and summary["mtre_mm"]["p95"] == math.inf
    assert summary["mtre_posed_mm"]["p50"] == 2.5
    assert summary["gfr_percent"] == {"10": 40.0, "5": 40.0}
    assert latency_summary([10.0, 20.0, 30.0]) == {"frames": 3, "p50": 20.0, "p95": 29.0, "p99": 29.8}


def test_target_points_are_fixed_bone_voxels():
    hu = np.full((20, 30, 10), -1000.0, dtype=np.float32)
    hu[5:15, 10:20, 2:8] = 700.0  # a bone block of 600 voxels
    affine = np.diag([0.5, 0.5, 2.0, 1.0])
    affine[:3, 3] = [-10.0, 20.0, 5.0]
    volume = Volume(hu, affine, "block")
    points = target_points(volume, n=100)
    assert points.shape == (100, 3)
    np.testing.assert_array_equal(points, target_points(volume, n=100))  # fixed
    ijk = volume.ct_to_voxels(points)
    np.testing.assert_allclose(ijk, np.round(ijk), atol=1e-9)  # voxel centres ...
    assert (hu[tuple(np.round(ijk).astype(int).T)] >= 350).all()  # ... in bone
    assert len(target_points(volume, n=10_000)) == 600  # all of them when fewer
    with pytest.raises(ValueError, match="no bone"):
        target_points(Volume(np.zeros((8, 8, 8), np.float32), np.eye(4), "water"))


def test_covariance_coverage_counts_errors_inside_the_95_percent_region():
    """Errors drawn from each pose's own covariance: ~95 % inside overall and per tercile; the
    same errors judged by one constant covariance: too many inside where little is predicted."""
    from rayemb_ros.evaluation.metrics import covariance_coverage
    from rayemb_ros.geometry.covariance import CHI2_6_95

    rng = np.random.default_rng(0)
    covariances = [np.diag([s, s, s, 1e-6 * s, 1e-6 * s, 1e-6 * s]) for s in np.exp(rng.uniform(-3, 3, 600))]
    errors = [rng.multivariate_normal(np.zeros(6), C) for C in covariances]
    c = covariance_coverage(errors, covariances)
    assert c["frames"] == 600 and 92 <= c["inside_95_percent"] <= 98
    assert all(90 <= t <= 99 for t in c["terciles_inside_95_percent"])
    assert covariance_coverage([], [])["frames"] == 0
    # one constant covariance for the same errors fails where the calibrated one predicts little:
    # every error of that third lies inside it
    constant = np.mean(covariances, axis=0)
    small = np.argsort([np.trace(C[:3, :3]) for C in covariances])[:200]
    assert all(e @ np.linalg.solve(constant, e) < CHI2_6_95 for e in np.array(errors)[small])
