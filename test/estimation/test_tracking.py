"""Tracking: which prior each frame gets (recent trusted poses, carried on by their motion; poses
from outside only to start), and, on the bundled CT at the shipped settings, that a prior
registers a moving C-arm's frames in windows and that a wrong prior (a sudden jump, another
view, a prior 30 deg / 100 mm off) falls back to the full path and drags no pose away."""

from types import SimpleNamespace

import numpy as np
import pytest

from rayemb_ros.estimation.estimator import Estimator
from rayemb_ros.estimation.result import Estimate, Landmarks
from rayemb_ros.estimation.tracking import MAX_EXTRAPOLATION, OUTSIDE_PRIOR_WINDOW_PX, PRIOR_WINDOW_PX, Prior, Tracker
from rayemb_ros.evaluation.metrics import frame_mtre, target_points
from rayemb_ros.geometry.poses import carm_pose
from rayemb_ros.imaging.simulate import plan, simulate_frames
from rayemb_ros.params import Params

CENTRE = np.array([5.0, -10.0, 20.0])
FRAME_NS = 66_666_667  # 15 fps


class Posing:
    """Poses each frame at the pose its image names (image[0, 0] = LAO degrees), or refuses
    it (negative); remembers the prior each frame was given."""

    def __init__(self):
        self.scene = SimpleNamespace(volume=SimpleNamespace(center=CENTRE))
        self.priors: list[Prior | None] = []

    def estimate(self, image, K, prior=None):
        self.priors.append(prior)
        lao = float(image[0, 0])
        if lao < 0:
            return Estimate.refused("no")
        T = carm_pose(CENTRE, lao, 0.0, 0.0, 800.0)
        return Estimate(True, "", T, T, Landmarks.empty(), 0, 0.5, 1.0, mode="prior" if prior else "full")


def image(lao: float) -> np.ndarray:
    out = np.zeros((4, 4), np.float32)
    out[0, 0] = lao
    return out


def test_the_last_trusted_pose_is_the_next_frames_prior_while_it_is_recent():
    posing = Posing()
    tracker = Tracker(posing, max_age_s=1.0)
    tracker.estimate(image(0.0), None, 0)
    assert posing.priors[-1] is None  # the first frame has none
    tracker.estimate(image(-1.0), None, FRAME_NS)  # refused: the prior stays
    np.testing.assert_allclose(posing.priors[-1].T_ct_source, carm_pose(CENTRE, 0.0, 0.0, 0.0, 800.0))
    assert posing.priors[-1].window_px == PRIOR_WINDOW_PX and posing.priors[-1].source == "last pose"
    assert tracker.prior_for(2_000_000_000) is None  # 2 s later: too old
    assert tracker.prior_for(-1) is None  # the stamps went back
    tracker.reset()
    assert tracker.prior_for(FRAME_NS) is None


def test_the_prior_is_carried_on_by_the_last_motion():
    posing = Posing()
    tracker = Tracker(posing)
    for i in range(3):  # an orbit at 1 deg per frame
        tracker.estimate(image(float(i)), None, i * FRAME_NS)
    predicted = tracker.prior_for(3 * FRAME_NS).T_ct_source
    assert frame_mtre(predicted, carm_pose(CENTRE, 3.0, 0.0, 0.0, 800.0), CENTRE[None] + 50.0) < 1e-6
    # a frame two intervals on: twice the motion
    assert frame_mtre(tracker.prior_for(4 * FRAME_NS).T_ct_source, carm_pose(CENTRE, 4.0, 0.0, 0.0, 800.0),
                      CENTRE[None] + 50.0) < 1e-6
    # after a long gap, not that motion many times over: the last pose as it is
    late = int((MAX_EXTRAPOLATION + 2) * FRAME_NS) + 2 * FRAME_NS
    np.testing.assert_allclose(tracker.prior_for(late).T_ct_source, carm_pose(CENTRE, 2.0, 0.0, 0.0, 800.0))


def test_a_pose_from_outside_starts_tracking_and_never_overrides_the_frames():
    posing = Posing()
    tracker = Tracker(posing)
    outside = Prior.outside(carm_pose(CENTRE, 4.0, 2.0, 0.0, 800.0), 0)
    tracker.seed(outside)
    tracker.estimate(image(0.0), None, FRAME_NS)
    assert posing.priors[-1] is outside and outside.window_px == OUTSIDE_PRIOR_WINDOW_PX
    tracker.seed(Prior.outside(carm_pose(CENTRE, 9.0, 0.0, 0.0, 800.0), 2 * FRAME_NS))
    tracker.estimate(image(1.0), None, 2 * FRAME_NS)
    # the frame's own trusted pose wins, as it is: no motion is made of the outside pose
    assert posing.priors[-1].source == "last pose"
    np.testing.assert_allclose(posing.priors[-1].T_ct_source, carm_pose(CENTRE, 0.0, 0.0, 0.0, 800.0))


# --------------------------------------------------------------------------- the real CT


@pytest.fixture(scope="module")
def orbit(example_volume):
    """The shipped estimator with the bundled CT, and 3 held-out frames of an orbit at 15 fps
    plus one frame of an independent view."""
    estimator = Estimator(Params(device="cpu"))
    estimator.set_volume(example_volume)
    shots = plan(example_volume, 3, 2401, 256, 256, trajectory="orbit", fps=15.0)
    frames = list(simulate_frames(example_volume, shots, 2401, fps=15.0))
    other = list(simulate_frames(example_volume, plan(example_volume, 1, 2402, 256, 256), 2402))[0]
    return estimator, frames, other, target_points(example_volume)


def test_a_moving_c_arm_is_registered_from_its_prior(orbit):
    estimator, frames, _, points = orbit
    tracker = Tracker(estimator)
    estimates = [tracker.estimate(f.image, f.K, f.stamp_ns) for f in frames]
    assert [e.mode for e in estimates] == ["full", "prior", "prior"], [e.fallback for e in estimates]
    for e, f in zip(estimates, frames):
        assert e.ok, e.reason
        assert frame_mtre(e.T_ct_source, f.T_ct_source_gt, points) < 4.0
        assert e.covariance is not None
    prior = estimates[-1]
    assert "refine" in prior.stage_ms and prior.num_inliers >= Params().min_inlier_ratio * Params().num_keep


def turned(T, degrees, about, pivot, shift_mm=0.0):
    """``T`` turned by ``degrees`` about the CT axis ``about`` through ``pivot`` (a C-arm
    turning about the patient), then shifted along the CT's x (mm)."""
    from scipy.spatial.transform import Rotation

    R = Rotation.from_rotvec(np.radians(degrees) * np.asarray(about, float)).as_matrix()
    out = T.copy()
    out[:3, :3] = R @ T[:3, :3]
    out[:3, 3] = R @ (T[:3, 3] - pivot) + pivot + np.array([shift_mm, 0.0, 0.0])
    return out


@pytest.mark.parametrize("wrong", ["a sudden 20 deg jump", "another view", "30 deg and 100 mm off"])
def test_a_wrong_prior_falls_back_and_drags_no_pose_away(orbit, wrong):
    estimator, frames, other, points = orbit
    frame = frames[-1]
    T = frame.T_ct_source_gt
    centre = estimator.scene.volume.center
    T_wrong = {
        "a sudden 20 deg jump": lambda: turned(T, 20.0, [0, 0, 1], centre),
        "another view": lambda: other.T_ct_source_gt,
        "30 deg and 100 mm off": lambda: turned(T, 30.0, [1, 0, 0], centre, shift_mm=100.0),
    }[wrong]()
    assert frame_mtre(T_wrong, T, points) > 15.0  # it is wrong
    estimate = estimator.estimate(frame.image, frame.K, prior=Prior(T_wrong, frame.stamp_ns))
    # Posed from scratch, after the prior path said why not; or, for a turn about the CT
    # centre, from the landmarks near it that the windows still hold: rightly.
    assert estimate.ok, estimate.reason
    assert estimate.mode == "prior" or estimate.fallback.startswith("last pose as prior: "), estimate.fallback
    assert frame_mtre(estimate.T_ct_source, T, points) < 10.0, estimate.mode
