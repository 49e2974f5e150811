"""Continuous C-arm motion: consecutive poses move as each trajectory says, at its speeds."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from rayemb_ros.geometry.poses import PoseRange
from rayemb_ros.geometry.trajectories import (
    MAX_ROTATION_DEG_S, MAX_TABLE_MM_S, TRAJECTORIES, trajectory_poses,
)

CENTRE = np.array([10.0, -20.0, 30.0])
FPS = 15.0


def motion(poses):
    """Each step's rotation between consecutive frames, a rotation vector in CT axes (deg)."""
    return np.array([Rotation.from_matrix(b[:3, :3] @ a[:3, :3].T).as_rotvec(degrees=True)
                     for a, b in zip(poses[:-1], poses[1:])])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_an_orbit_turns_steadily_about_the_long_axis_within_the_range(seed):
    poses = trajectory_poses(np.random.default_rng(seed), "orbit", 100, FPS, CENTRE)
    steps = motion(poses)
    speed = np.linalg.norm(steps, axis=1) * FPS
    assert 5.0 - 1e-6 <= speed.min() and speed.max() <= MAX_ROTATION_DEG_S + 1e-6
    assert np.ptp(speed) < 1e-6  # steady
    np.testing.assert_allclose(steps[:, :2], 0.0, atol=1e-9)  # about CT z only
    sweep = abs(steps[:, 2].sum())
    assert sweep <= 2 * PoseRange().lao_deg + 1e-6


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_wigwag_rocks_back_and_forth_at_up_to_its_speed(seed):
    poses = trajectory_poses(np.random.default_rng(seed), "wigwag", 100, FPS, CENTRE)
    steps = motion(poses)[:, 2]
    assert np.abs(steps).max() * FPS <= MAX_ROTATION_DEG_S + 1e-6
    assert (steps > 0).any() and (steps < 0).any()  # both ways
    angle = np.concatenate([[0.0], np.cumsum(steps)])
    assert 2 * 5.0 * 0.5 <= np.ptp(angle) <= 2 * 15.0 + 1e-6


@pytest.mark.parametrize("kind", ["table", "still"])
def test_a_held_c_arm_does_not_turn_and_the_patient_moves_as_said(kind):
    rng = np.random.default_rng(3)
    poses = trajectory_poses(rng, kind, 100, FPS, CENTRE)
    np.testing.assert_allclose(motion(poses), 0.0, atol=1e-9)
    moves = np.diff(poses[:, :3, 3], axis=0)
    if kind == "table":  # a slide along the patient's long axis
        np.testing.assert_allclose(moves[:, :2], 0.0, atol=1e-9)
        speed = np.abs(moves[:, 2]) * FPS
        assert np.ptp(speed) < 1e-6 and 5.0 - 1e-6 <= speed[0] <= MAX_TABLE_MM_S + 1e-6
    else:  # breathing: a few mm around where it started, no drift
        spread = np.linalg.norm(poses[:, :3, 3] - poses[:, :3, 3].mean(0), axis=1)
        assert 0.3 < spread.max() < 5.0


def test_a_trajectory_is_its_seed():
    for kind in TRAJECTORIES:
        a = trajectory_poses(np.random.default_rng(7), kind, 20, FPS, CENTRE)
        b = trajectory_poses(np.random.default_rng(7), kind, 20, FPS, CENTRE)
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="trajectory must be one of"):
        trajectory_poses(np.random.default_rng(0), "loop", 5, FPS, CENTRE)


def test_a_planned_sequence_is_one_c_arm(example_volume):
    """With a trajectory every frame has the same detector and style (one C-arm), and the
    frames' poses are the trajectory's."""
    from rayemb_ros.imaging.simulate import plan

    shots = plan(example_volume, 6, 11, 64, 64, trajectory="orbit", fps=FPS)
    assert all(s.detector == shots[0].detector and s.style == shots[0].style for s in shots)
    speed = np.linalg.norm(motion(np.stack([s.T_ct_source for s in shots])), axis=1) * FPS
    assert np.ptp(speed) < 1e-6 and speed[0] <= MAX_ROTATION_DEG_S + 1e-6
