"""The node's core loop without ROS: path confinement, newest-frame-wins, drops and rejections
counted, loads serialised with estimates. A scripted estimator stands in for the real one
here so that the worker can be held at will; the node tests run the real one. The CameraInfo
waits are set per test (``PairingWaits``): long where a test must see the worker wait (it then
acts once ``Runner.waiting_for_camera_info`` says so), none where it must see it give up."""

import os
import threading
import time

import numpy as np
import pytest

from rayemb_ros.io.camera_info import NO_CAMERA_INFO
from rayemb_ros.params import Params
from rayemb_ros.estimation.result import Estimate, Landmarks, PoseGrade, VolumeInfo
from rayemb_ros.estimation.runner import FRAME_REJECTED, Frame, Level, PairingWaits, PathRefused, Runner, confine
from rayemb_ros.ros.graph import wait_until


def test_confine(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (outside / "ct.nii.gz").touch()
    (root / "ct.nii.gz").touch()
    os.symlink(outside / "ct.nii.gz", root / "escape.nii.gz")
    os.symlink(outside, root / "escape_dir")
    os.symlink(root / "ct.nii.gz", root / "sub" / "inside.nii.gz")

    assert confine("example", str(root)) == "example"
    assert confine(str(root / "ct.nii.gz"), str(root)) == str(root / "ct.nii.gz")
    assert confine("ct.nii.gz", str(root)) == str(root / "ct.nii.gz")  # relative to the root
    assert confine(str(root / "sub" / "inside.nii.gz"), str(root)) == str(root / "ct.nii.gz")
    for bad in [str(outside / "ct.nii.gz"), str(root / ".." / "outside" / "ct.nii.gz"), "../outside/ct.nii.gz",
                str(root / "escape.nii.gz"), str(root / "escape_dir" / "ct.nii.gz"), "/etc/passwd", " "]:
        with pytest.raises(PathRefused):
            confine(bad, str(root))


class ScriptedEstimator:
    """Estimates that block until released; records overlapping calls."""

    def __init__(self):
        self.has_volume = False
        self.scene = None
        self.pose_grade = PoseGrade(("refinement off",))
        self.priors = []  # each estimate's prior
        self.release = threading.Event()
        self.release.set()
        self.started: list[int] = []  # image sizes (frame ids) as estimates begin
        self.calls_in_flight = 0
        self.max_in_flight = 0

    def _enter(self):
        self.calls_in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.calls_in_flight)

    def load_volume(self, path):
        self._enter()
        try:
            self.release.wait(5)
            if path.endswith("corrupt"):
                raise ValueError(f"cannot read {path}")
            self.has_volume = True
            return VolumeInfo(path, 10, 0.1, (1, 1, 1), (1.0, 1.0, 1.0))
        finally:
            self.calls_in_flight -= 1

    def estimate(self, image, K, prior=None):
        self._enter()
        self.started.append(int(image[0, 0]))
        self.priors.append(prior)
        try:
            self.release.wait(5)
            if image[0, 1] < 0:
                raise RuntimeError("boom")
            return Estimate(True, "", np.eye(4), np.eye(4), Landmarks.empty(), 0, 0.5, 1.0)
        finally:
            self.calls_in_flight -= 1


# Long enough that a test always acts while the worker waits, never a speed requirement.
HOLD_S = 60.0


def make_runner(tmp_path, waits: PairingWaits):
    estimator = ScriptedEstimator()
    results, events = [], []
    runner = Runner(estimator, Params(volume_root=str(tmp_path)), results.append,
                    lambda health, log: events.append((health, log)), waits)
    return runner, estimator, results, events


@pytest.fixture
def setup(tmp_path):
    """A runner whose frames give up on a missing CameraInfo at once."""
    runner, estimator, results, events = make_runner(tmp_path, PairingWaits(0.0, 0.0, 0.0))
    yield runner, estimator, results, events
    estimator.release.set()
    runner.close()


@pytest.fixture
def patient(tmp_path):
    """A runner whose frames wait (HOLD_S) for a CameraInfo not there yet, once paired only."""
    runner, estimator, results, events = make_runner(tmp_path, PairingWaits(0.0, HOLD_S, 0.0))
    yield runner, estimator, results, events
    estimator.release.set()
    runner.close()


def frame(ident: int, stamp_ns: int = 0, shape=(4, 5)) -> Frame:
    image = np.zeros(shape, np.float32)
    image[0, 0] = ident
    image[0, 1] = 1.0
    return Frame(image, stamp_ns, time.monotonic())


def test_frames_before_a_volume_or_camera_info_are_counted(setup):
    runner, estimator, results, events = setup
    for i in range(3):
        runner.submit(frame(i))
    health = runner.health
    assert (health.frames_received, health.dropped_no_volume, health.volume) == (3, 3, None)
    assert [log for _, log in events] == [True, False, False]  # one line, not one per frame
    runner.load_volume("example")
    runner.submit(frame(4))
    wait_until(lambda: runner.health.rejected == 1, 5, "a rejection")
    assert "no CameraInfo" in runner.health.last_rejection and results == []
    assert all(h.pose_grade is estimator.pose_grade for h, _ in events)  # the estimator's, on every report


def late_camera_info(runner: Runner, results: list, stamp: int) -> float:
    """Submit a frame whose CameraInfo is sent only once the worker holds the frame for it;
    the fx of the K the frame was estimated with (the CameraInfo's is ``stamp``)."""
    count = len(results)
    runner.submit(frame(stamp, stamp_ns=stamp))
    wait_until(lambda: runner.waiting_for_camera_info == stamp, 5, f"the worker to wait for stamp {stamp}")
    runner.camera_info(stamp, np.diag([float(stamp), float(stamp), 1.0]), 0, 0)
    wait_until(lambda: len(results) > count, 5, "a result")
    return results[-1].K[0, 0]


def test_an_image_waits_for_its_camera_info(tmp_path):
    """Before any pairing, a frame waits ``unpaired_s`` for the CameraInfo with its stamp (as
    image_transport sends the image first), and takes it when it comes."""
    runner, estimator, results, events = make_runner(tmp_path, PairingWaits(HOLD_S, HOLD_S, 0.0))
    try:
        runner.load_volume("example")
        runner.camera_info(10, np.diag([10.0, 10.0, 1.0]), 0, 0)
        assert late_camera_info(runner, results, 20) == 20
    finally:
        runner.close()


def test_an_image_gives_up_waiting_and_takes_the_newest(setup):
    runner, estimator, results, events = setup
    runner.load_volume("example")
    runner.camera_info(10, np.diag([10.0, 10.0, 1.0]), 0, 0)
    runner.submit(frame(1, stamp_ns=20))
    wait_until(lambda: results, 5, "a result")
    assert results[0].K[0, 0] == 10 and runner.waiting_for_camera_info is None


def test_an_image_waits_once_camera_infos_come_one_per_image(patient):
    """The previous frame's CameraInfo may hold another K: once images have been finding
    their own, a late one is waited for rather than replaced (``paired_s``, not ``unpaired_s``)."""
    runner, estimator, results, events = patient
    runner.load_volume("example")
    runner.camera_info(10, np.diag([10.0, 10.0, 1.0]), 0, 0)
    runner.submit(frame(1, stamp_ns=10))
    wait_until(lambda: results, 5, "a result")
    assert late_camera_info(runner, results, 20) == 20
    assert [r.K[0, 0] for r in results] == [10, 20]


def test_newest_frame_wins_and_loads_are_serialised(setup):
    runner, estimator, results, events = setup
    runner.camera_info(0, np.eye(3), 0, 0)
    runner.load_volume("example")
    estimator.release.clear()
    runner.submit(frame(1))
    wait_until(lambda: estimator.started, 5, "the first estimate to start")
    for i in range(2, 7):
        runner.submit(frame(i))
    load = runner.submit_load("second")  # queued behind the running estimate, before frame 6
    assert not load.done.wait(0.2)
    estimator.release.set()
    assert load.done.wait(5) and load.error is None
    wait_until(lambda: len(results) == 2, 5, "two results")
    assert estimator.started == [1, 6]
    assert runner.health.dropped_stale == 4 and runner.health.volume.path.endswith("/second")
    assert estimator.max_in_flight == 1


def test_camera_info_by_stamp_else_latest_and_sizes_checked(setup):
    """A camera whose CameraInfos carry other stamps than its images: each image takes the
    newest (the contract's "or the latest one"), until images find their own."""
    runner, estimator, results, events = setup
    runner.load_volume("example")
    K = {stamp: np.diag([stamp, stamp, 1.0]) for stamp in (10, 20, 30)}
    for stamp, k in K.items():
        runner.camera_info(stamp, k, 4, 5)
    runner.submit(frame(1, stamp_ns=99))
    wait_until(lambda: len(results) == 1, 5, "a result")
    runner.submit(frame(2, stamp_ns=20))
    wait_until(lambda: len(results) == 2, 5, "a result")
    assert results[0].K[0, 0] == 30 and results[1].K[0, 0] == 20
    runner.submit(frame(3, stamp_ns=30, shape=(8, 10)))
    wait_until(lambda: runner.health.rejected == 1, 5, "a rejection")
    assert "10x8 but its CameraInfo is 5x4" in runner.health.last_rejection


def test_an_image_whose_camera_info_was_lost_is_refused_when_k_changes(setup):
    """CameraInfos one per image: the newest belongs to another image, so an image whose own
    never came is refused, not posed with it, unless earlier CameraInfos show one K (a single
    one cannot; here the second K differs)."""
    runner, estimator, results, events = setup
    runner.load_volume("example")
    runner.camera_info(10, np.diag([10.0, 10.0, 1.0]), 0, 0)
    runner.submit(frame(10, stamp_ns=10))
    wait_until(lambda: len(results) == 1, 5, "a result")
    runner.submit(frame(20, stamp_ns=20))  # its CameraInfo is lost (the node test's failure)
    wait_until(lambda: runner.health.rejected == 1, 5, "a rejection")
    assert "no CameraInfo with this image's stamp" in runner.health.last_rejection
    assert "another image's K" in runner.health.last_rejection and len(results) == 1
    # what `rayemb replay --via-node` recognises (and resends the frame on) in the diagnostics
    assert runner.health.message.startswith(FRAME_REJECTED + NO_CAMERA_INFO)
    runner.camera_info(30, np.diag([30.0, 30.0, 1.0]), 0, 0)
    runner.submit(frame(30, stamp_ns=30))
    wait_until(lambda: len(results) == 2, 5, "a second result")
    runner.submit(frame(40, stamp_ns=40))  # lost again, after two different K
    wait_until(lambda: runner.health.rejected == 2, 5, "a second rejection")
    assert [r.K[0, 0] for r in results] == [10, 30]


def test_a_late_camera_info_is_waited_for_after_a_refusal(patient):
    """A refusal keeps the stream paired: the next image waits for its own CameraInfo again."""
    runner, estimator, results, events = patient
    runner.load_volume("example")
    runner.camera_info(10, np.diag([10.0, 10.0, 1.0]), 0, 0)
    runner.submit(frame(10, stamp_ns=10))
    wait_until(lambda: len(results) == 1, 5, "a result")
    runner.camera_info(30, np.diag([30.0, 30.0, 1.0]), 0, 0)
    runner.submit(frame(20, stamp_ns=20))  # older than the newest CameraInfo: no wait, its own is lost
    wait_until(lambda: runner.health.rejected == 1, 5, "a rejection")
    assert late_camera_info(runner, results, 40) == 40
    assert [r.K[0, 0] for r in results] == [10, 40]


def test_an_image_whose_camera_info_was_lost_takes_the_same_k_of_a_steady_camera(setup):
    runner, estimator, results, events = setup
    runner.load_volume("example")
    K = np.diag([7.0, 7.0, 1.0])
    for stamp in (10, 20):
        runner.camera_info(stamp, K, 0, 0)
        runner.submit(frame(stamp, stamp_ns=stamp))
        wait_until(lambda: len(results) == stamp // 10, 5, "a result")
    runner.submit(frame(30, stamp_ns=30))  # its CameraInfo is lost; every K was the same
    wait_until(lambda: len(results) == 3, 5, "a third result")
    assert results[2].K[0, 0] == 7 and runner.health.rejected == 0


def test_failures_are_reported_and_the_worker_goes_on(setup):
    runner, estimator, results, events = setup
    runner.camera_info(0, np.eye(3), 0, 0)
    runner.load_volume("example")
    with pytest.raises(ValueError, match="cannot read"):
        runner.load_volume("corrupt")
    assert runner.health.volume.path == "example" and runner.health.level == Level.WARN
    with pytest.raises(PathRefused):
        runner.load_volume("/etc/passwd")
    bad = frame(1)
    bad.image[0, 1] = -1.0
    runner.submit(bad)
    wait_until(lambda: runner.health.level == Level.ERROR, 5, "an error event")
    assert "boom" in runner.health.message
    runner.submit(frame(2))
    wait_until(lambda: results, 5, "a result after the failure")
    assert runner.health.level == Level.OK and runner.health.poses_ok == 1


def test_frames_are_tracked_and_a_pose_prior_starts_tracking_unless_ignored(setup):
    """With tracking (the default), each frame gets the last trusted pose as its prior; a pose
    from outside seeds a frame with no recent trusted pose; one in another frame, or stale
    beside the frames, is ignored with a line per reason (and counted), not one per message."""
    runner, estimator, results, events = setup
    runner.camera_info(0, np.eye(3), 0, 0)
    runner.load_volume("example")
    outside = np.eye(4)
    outside[:3, 3] = [1.0, 2.0, 800.0]
    runner.pose_prior(outside, 0, "ct")
    runner.submit(frame(1, stamp_ns=10))
    wait_until(lambda: len(results) == 1, 5, "a result")
    assert estimator.priors[0].source == "pose_prior"
    np.testing.assert_array_equal(estimator.priors[0].T_ct_source, outside)
    runner.submit(frame(2, stamp_ns=20))
    wait_until(lambda: len(results) == 2, 5, "a result")
    assert estimator.priors[1].source == "last pose"
    assert runner.health.last_mode == "full"  # what the estimator said
    logged = len([e for e in events if e[1]])
    for _ in range(3):
        runner.pose_prior(outside, 30, "map")
    assert runner.health.message == "pose_prior ignored: its frame_id 'map' is not 'ct'"
    runner.pose_prior(outside, 20 - int(2e9), "ct")
    assert runner.health.message.startswith("pose_prior ignored: stale: 2.0 s older than the newest frame")
    health = runner.health
    assert (health.priors_received, health.priors_ignored) == (5, 4)
    assert len([e for e in events if e[1]]) == logged + 2  # a line per reason, not per message
    runner.load_volume("another")  # a new CT: no prior from the old one
    runner.submit(frame(3, stamp_ns=30))
    wait_until(lambda: len(results) == 3, 5, "a result")
    assert estimator.priors[2] is None
