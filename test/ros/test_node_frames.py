"""The node under traffic, as its own process over DDS: outputs for good frames (and poses close
to the ground truth), rejections for bad ones, a 30 Hz flood from reliable and best-effort
publishers, a kill and restart.

One node serves the module (started from a params file that preloads the bundled CT), but no
test relies on another having run: each waits for a running node with its CT loaded, counts
from where the node's counters stand when it begins, and leaves the node running (a node found
dead is started again). Frames are simulated with diffdrr, which the estimator never uses.
Every wait is for an event (a message, a counter) with a generous timeout; nothing is timed.
"""

import signal
import threading
import time

import numpy as np
import psutil
import pytest
import yaml
from rclpy.qos import ReliabilityPolicy
from builtin_interfaces.msg import Time
from geometry_msgs.msg import PoseStamped
from rclpy.qos import QoSProfile
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from unsupported_encodings import UNSUPPORTED
from rayemb_ros.evaluation.metrics import frame_mtre, target_points
from rayemb_ros.geometry.camera import resize_image
from rayemb_ros.io.images import to_encoding_range
from rayemb_ros.ros.convert import array_to_image, frames_handled, matrix_to_pose, transform_to_matrix
from rayemb_ros.srv import LoadVolume
from rayemb_ros.ros.graph import wait_until
from rosutil import REPO, Camera, NodeUnderTest, stamp_ns

LOAD_TIMEOUT_S = 300.0
RESULT_TIMEOUT_S = 60.0
FLOOD_HZ = 30.0
FLOOD_S = 20.0
FLOOD_SIZE = 512
# Refinement is off here (the queue under a flood is tested, not refinement): its poses are a
# few mm off, and a few in a hundred are published > 10 mm off, labelled advisory-grade (docs/
# results.md). The frames of seed 11 reach 2.7 and 3.5 mm; the third, 19 mm, is such a miss.
POSE_TOLERANCE_MM = 5.0


@pytest.fixture(scope="module")
def frames(example_volume) -> list[tuple[Image, np.ndarray, np.ndarray]]:
    """Three simulated 256 px frames of the bundled CT: (mono16 Image, K, T_ct_source ground truth)."""
    from rayemb_ros.imaging.simulate import plan, simulate_frames

    shots = plan(example_volume, 3, seed=11, height=256, width=256)
    return [(array_to_image(to_encoding_range(f.image, "mono16"), "mono16", Header()), f.K, f.T_ct_source_gt)
            for f in simulate_frames(example_volume, shots, seed=11)]


@pytest.fixture(scope="module")
def module_node(tmp_path_factory):
    work = tmp_path_factory.mktemp("node")
    params = yaml.safe_load((REPO / "config" / "rayemb.yaml").read_text())
    params["/**"]["ros__parameters"].update(volume="example", volume_root=str(work), device="cpu", refine=False)
    params_file = work / "params.yaml"
    params_file.write_text(yaml.safe_dump(params))
    ros = NodeUnderTest(["--params-file", str(params_file)], work / "node.log")
    yield ros
    assert ros.close() == 0, ros.node.log_tail()


@pytest.fixture
def ros(module_node):
    """The module's node, running with its CT loaded (started again if a test left it dead)."""
    if not module_node.node.alive:
        module_node.node.start()
    module_node.values(lambda v: v["volume_loaded"] == "true", LOAD_TIMEOUT_S, "the preloaded CT",
                       since=max(0, len(module_node.diagnostics) - 1))
    return module_node


def outputs(ros: NodeUnderTest, stamp: int, verdict: dict[str, str], before: dict[str, str]) -> dict[str, object]:
    """The landmarks, markers and overlay of the frame stamped ``stamp``, and its pose and TF
    when the node's verdict on it says the pose was trusted (all were published before it)."""
    def of(inbox, header_of):
        return inbox.wait_for(lambda m: stamp_ns(header_of(m)) == stamp, RESULT_TIMEOUT_S,
                              f"output of frame {stamp}\n{ros.node.log_tail()}")

    found = {
        "landmarks": of(ros.landmarks, lambda m: m.header),
        "markers": of(ros.markers, lambda m: m.markers[0].header),
        "overlay": of(ros.overlay, lambda m: m.header),
        "pose": None,
        "tf": None,
    }
    if int(verdict["poses_ok"]) > int(before["poses_ok"]):
        found["pose"] = of(ros.pose, lambda m: m.header)
        found["tf"] = of(ros.tf, lambda m: m.transforms[0].header).transforms[0]
    else:  # refused: nothing of this frame's pose was ever published
        assert not any(stamp_ns(m.header) == stamp for m in ros.pose.snapshot())
    return found


def send(ros: NodeUnderTest, camera: Camera, image: Image, K) -> tuple[int, dict[str, str], dict[str, str]]:
    """One frame as a driver sends it: its stamp, the node's verdict and the values before."""
    before = ros.latest()
    stamp, verdict = camera.publish_heard(image, K, ros.latest)
    return stamp, verdict, before


def test_preloads_the_volume_from_its_config(ros):
    values = ros.latest()
    assert values["volume"] == "example" and int(values["num_landmarks"]) > 0
    # refinement is off here: the node says once per start, and on every diagnostics message,
    # that its poses are not for navigation
    assert (values["pose_grade"], values["pose_grade_reasons"]) == ("advisory", "refinement off")
    log = ros.node.log()
    starts = log.count("ready (device")
    assert starts >= 1 and log.count("poses will be advisory-grade, not navigation-grade: refinement off") == starts


def test_an_image_whose_camera_info_never_comes_is_refused(ros, frames):
    """After two frames with different K (a zooming camera), an image without its own
    CameraInfo must not be posed with another image's K."""
    camera = Camera(ros.graph)
    for image, K, _ in frames[:2]:
        send(ros, camera, image, K)
    before = ros.latest()
    stamp, verdict = camera.publish_heard(frames[2][0], None, ros.latest)
    assert int(verdict["rejected"]) == int(before["rejected"]) + 1 and int(verdict["poses_ok"]) == int(before["poses_ok"])
    assert verdict["last_rejection"].startswith("no CameraInfo"), verdict
    assert not any(stamp_ns(m.transforms[0].header) == stamp for m in ros.tf.snapshot())
    camera.close()


def bad_frames(good: Image) -> list[tuple[str, Image]]:
    """(expected reason, frame) for every kind of frame the contract rejects."""
    def variant(encoding: str = "mono16", **fields) -> Image:
        msg = Image(height=good.height, width=good.width, encoding=encoding, step=good.step, data=good.data)
        for name, value in fields.items():
            setattr(msg, name, value)
        return msg

    nan = np.ones((good.height, good.width), np.float32)
    nan[5, 5] = np.nan
    return (
        [("unsupported encoding", variant(e)) for e in UNSUPPORTED]
        + [
            ("is smaller than", variant(step=good.step - 2)),
            ("expected step*height", variant(step=good.step + 2)),
            ("empty image", variant(height=0, width=0, step=0, data=b"")),
            ("NaN or Inf", array_to_image(nan, "32FC1", Header())),
            ("constant image", array_to_image(np.full((good.height, good.width), 7, np.uint16), "mono16", Header())),
        ]
    )


def test_bad_frames_are_rejected_between_good_ones(ros, frames):
    camera = Camera(ros.graph)
    image, K, _ = frames[0]
    trusted = 0
    groups: dict[str, list[Image]] = {}
    for reason, bad in bad_frames(image):
        groups.setdefault(reason, []).append(bad)
    for i, (reason, group) in enumerate([*groups.items(), ("", [])]):
        good, good_K, _ = frames[i % len(frames)]
        stamp, verdict, before = send(ros, camera, good, good_K)
        out = outputs(ros, stamp, verdict, before)
        assert len(out["landmarks"].landmarks) > 0 and out["overlay"].encoding == "rgb8"
        if out["tf"] is not None:
            trusted += 1
            assert (out["tf"].header.frame_id, out["tf"].child_frame_id) == ("ct", "carm_source")
            assert out["pose"].header.frame_id == "ct"
        for bad in group:
            before = ros.latest()
            _, verdict = camera.publish_heard(bad, K, ros.latest)
            assert int(verdict["rejected"]) == int(before["rejected"]) + 1, verdict
            assert reason in verdict["last_rejection"], (reason, verdict["last_rejection"])
            assert int(verdict["frames_estimated"]) == int(before["frames_estimated"])
    assert trusted > 0, "no good frame gave a trusted pose"
    assert ros.node.alive
    camera.close()


def test_a_second_load_replaces_the_first(ros, frames):
    response = ros.graph.call(LoadVolume, "/rayemb_node/load_volume", LoadVolume.Request(path="example"),
                              LOAD_TIMEOUT_S)
    assert response.success, response.message
    camera = Camera(ros.graph)
    image, K, _ = frames[1]
    stamp, verdict, before = send(ros, camera, image, K)
    assert len(outputs(ros, stamp, verdict, before)["landmarks"].landmarks) > 0
    camera.close()


def test_frames_one_at_a_time_get_poses_near_the_truth(ros, frames, example_volume):
    """Each frame's TF (metres and a quaternion over DDS) back in mm, against its ground truth."""
    camera = Camera(ros.graph)
    points = target_points(example_volume)
    errors = []
    for image, K, T_gt in frames:
        stamp, verdict, before = send(ros, camera, image, K)
        tf = outputs(ros, stamp, verdict, before)["tf"]
        errors.append(frame_mtre(None if tf is None else transform_to_matrix(tf.transform), T_gt, points))
    camera.close()
    assert sum(e <= POSE_TOLERANCE_MM for e in errors) >= 2, errors  # a refused frame counts as inf


def test_a_pose_prior_is_taken_in_ct_and_ignored_in_another_frame(ros, frames):
    """~/pose_prior over DDS: a pose in another frame is ignored with a diagnostics line; one
    in ``ct`` is taken, and the next frame says how it was registered (``last_mode``)."""
    image, K, T_gt = frames[0]
    prior = ros.graph.publisher(PoseStamped, "/rayemb_node/pose_prior", QoSProfile(depth=10))
    wait_until(lambda: prior.get_subscription_count(), 30, "the node to subscribe to ~/pose_prior")
    before = ros.latest()

    def publish(frame_id: str) -> None:
        stamp = time.time_ns()
        header = Header(stamp=Time(sec=stamp // 1_000_000_000, nanosec=stamp % 1_000_000_000), frame_id=frame_id)
        prior.publish(PoseStamped(header=header, pose=matrix_to_pose(T_gt)))

    publish("map")
    ignored = ros.values(lambda v: int(v["priors_ignored"]) > int(before["priors_ignored"]), RESULT_TIMEOUT_S,
                         "the prior in another frame ignored")
    assert ignored["message"] == "pose_prior ignored: its frame_id 'map' is not 'ct'"
    publish("ct")
    taken = ros.values(lambda v: int(v["priors_received"]) > int(ignored["priors_received"]), RESULT_TIMEOUT_S,
                       "the prior in ct received")
    assert taken["priors_ignored"] == ignored["priors_ignored"]
    camera = Camera(ros.graph)
    _, verdict, _ = send(ros, camera, image, K)
    camera.close()
    assert verdict["last_mode"] in ("prior", "full") and (verdict["last_mode"] == "prior" or verdict["last_fallback"])


def test_flood_reliable_then_best_effort(ros, frames):
    """A 30 Hz stream of 512 px frames: the newest frame wins and no queue builds (once the
    stream stops, only the frame in hand and the newest one are still estimated), memory stays
    flat, and the load service keeps answering, a real load included."""
    big = [(array_to_image(to_encoding_range(img, "mono16"), "mono16", Header()), K)
           for img, K in (resize_image(np.frombuffer(bytes(m.data), np.uint16).reshape(m.height, m.width)
                                       .astype(np.float32), K, FLOOD_SIZE, FLOOD_SIZE) for m, K, _ in frames)]
    process = psutil.Process(ros.node.proc.pid)
    rss_mb: list[float] = []
    answers: list[LoadVolume.Response] = []
    reload: dict[str, object] = {}
    stop = threading.Event()

    def load(path: str) -> LoadVolume.Response:
        return ros.graph.call(LoadVolume, "/rayemb_node/load_volume", LoadVolume.Request(path=path), LOAD_TIMEOUT_S)

    def watch():  # memory, and the service answering while frames pour in: refusals, one real load
        while not stop.wait(1.0):
            rss_mb.append(process.memory_info().rss / 2**20)
            if len(answers) == 5 and not reload:
                received = int(ros.latest()["frames_received"])
                reload["response"] = load("example")
                reload["frames_received_meanwhile"] = int(ros.latest()["frames_received"]) - received
            elif len(answers) < 10:
                answers.append(load("/"))

    watcher = threading.Thread(target=watch)
    watcher.start()
    before = ros.latest()
    try:
        for reliability in (ReliabilityPolicy.RELIABLE, ReliabilityPolicy.BEST_EFFORT):
            camera = Camera(ros.graph, reliability)
            first = len(ros.landmarks)
            start = time.monotonic()
            i = 0
            # the stream lasts FLOOD_S and at least until the watcher is done with the service
            while i < FLOOD_S * FLOOD_HZ or (reliability == ReliabilityPolicy.BEST_EFFORT and len(answers) < 10):
                image, K = big[i % len(big)]
                last = camera.publish(image, K)
                i += 1
                time.sleep(max(0.0, start + i / FLOOD_HZ - time.monotonic()))  # the stream's own rate
            ended = len(ros.landmarks)
            # Done once every image the node received is handled (estimated, or dropped for a
            # newer one, or refused: best-effort delivery may lose a frame's CameraInfo).
            ros.values(lambda v: frames_handled(v) == int(v["frames_received"]), RESULT_TIMEOUT_S,
                       f"{reliability.name}: the node to finish with the stream", since=len(ros.diagnostics))
            stamps = [stamp_ns(m.header) for m in ros.landmarks.snapshot(first)]
            # the frame in hand when the stream ended, then the newest: no backlog of older ones
            after_end = ros.landmarks.snapshot(ended)
            assert len(after_end) <= 3, f"{reliability.name}: {len(after_end)} outputs after the stream ended"
            assert len(stamps) >= 2 and stamps == sorted(stamps) and stamps[-1] <= last, reliability.name
            camera.close()
    finally:
        stop.set()
        watcher.join()

    assert ros.node.alive, ros.node.log_tail()
    values = ros.latest()
    assert int(values["dropped_stale"]) > int(before["dropped_stale"])  # the newest won, older ones were dropped
    assert max(rss_mb[len(rss_mb) // 4:]) - rss_mb[len(rss_mb) // 4] < 150, rss_mb
    # Answered while frames poured in: every refusal, and the real load mid-flood, with
    # images coming in while the worker loaded.
    assert len(answers) == 10 and not any(a.success for a in answers) and all(a.message for a in answers)
    assert reload["response"].success and reload["frames_received_meanwhile"] > 0, reload


def test_kill_and_restart_mid_stream(ros, frames):
    stop = threading.Event()
    camera = Camera(ros.graph)

    def stream():  # 5 Hz, as a C-arm in pulsed mode
        i = 0
        while not stop.wait(0.2):
            image, K, _ = frames[i % len(frames)]
            camera.publish(image, K)
            i += 1

    streamer = threading.Thread(target=stream)
    streamer.start()
    try:
        ros.tf.wait_for(lambda m: True, RESULT_TIMEOUT_S, "TF before the kill", since=len(ros.tf))
        ros.node.stop(signal.SIGKILL)
        killed_ns = time.time_ns()
        ros.node.start()
        ros.values(lambda v: v["volume_loaded"] == "true", LOAD_TIMEOUT_S, "the restarted node",
                   since=len(ros.diagnostics))
        tf = ros.tf.wait_for(lambda m: stamp_ns(m.transforms[0].header) > killed_ns, RESULT_TIMEOUT_S,
                             "TF from the restarted node")
        assert tf.transforms[0].child_frame_id == "carm_source"
    finally:
        stop.set()
        streamer.join()
        camera.close()
