"""Test-side helpers for real ROS 2 processes over DDS, on top of ``rayemb_ros.ros.graph``
(random loopback domains, `rayemb node` processes, our own participant): the node's
diagnostics as a dict, and ``Camera``, a stand-in for a C-arm driver."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from rayemb_ros.io.camera_info import NO_CAMERA_INFO
from rayemb_ros.ros.convert import diagnostics_values, frames_handled, stamp_ns
from rayemb_ros.ros.graph import Domain, Graph, GraphError, NodeProcess, wait_until
from rayemb_ros.ros.node import NODE_NAME

REPO = Path(__file__).resolve().parents[1]
# One estimate, refinement included, on a loaded 2-core machine: a generous bound on a wait
# for an event, never a speed requirement.
VERDICT_TIMEOUT_S = 120.0
# 2 shared cores: the node's numeric libraries get one thread each in the tests.
NODE_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}

__all__ = ["REPO", "Camera", "Domain", "Graph", "NodeProcess", "node_process", "status", "stamp_ns", "wait_until"]


def node_process(args: list[str], domain: Domain, log_path: Path) -> NodeProcess:
    """`rayemb node ARGS...` on ``domain``, with the tests' thread limits."""
    return NodeProcess(args, domain, log_path, **NODE_ENV)


def status(msg: DiagnosticArray) -> dict[str, str]:
    """The node's status values in a /diagnostics message (and its ``message``)."""
    values = diagnostics_values(msg, NODE_NAME)
    assert values is not None, f"no {NODE_NAME} status in {msg}"
    return values


class NodeUnderTest:
    """A `rayemb node` process on its own domain and the test's view of what it publishes."""

    def __init__(self, args: list[str], log_path: Path):
        from geometry_msgs.msg import PoseStamped
        from tf2_msgs.msg import TFMessage
        from visualization_msgs.msg import MarkerArray

        from rayemb_ros.msg import LandmarkArray

        domain = Domain.random()
        self.node = node_process(args, domain, log_path)
        self.graph = Graph(domain, "rayemb_test")
        self.diagnostics = self.graph.subscribe(DiagnosticArray, "/diagnostics", 50)
        self.tf = self.graph.subscribe(TFMessage, "/tf", QoSProfile(depth=100))
        self.pose = self.graph.subscribe(PoseStamped, f"/{NODE_NAME}/pose")
        self.landmarks = self.graph.subscribe(LandmarkArray, f"/{NODE_NAME}/landmarks")
        self.markers = self.graph.subscribe(MarkerArray, f"/{NODE_NAME}/markers")
        self.overlay = self.graph.subscribe(Image, f"/{NODE_NAME}/overlay")

    def values(self, where: Callable[[dict[str, str]], bool], timeout_s: float, what: str,
               since: int = 0) -> dict[str, str]:
        """The first /diagnostics values from message ``since`` on that satisfy ``where``."""
        msg = self.diagnostics.wait_for(lambda m: where(status(m)), timeout_s, f"{what}\n{self.node.log_tail()}",
                                        since, abort=self.node.exited)
        return status(msg)

    def latest(self) -> dict[str, str]:
        """The newest /diagnostics values (the node publishes them at least once a second)."""
        return status(self.diagnostics.wait_for(lambda m: True, 30, "diagnostics", max(0, len(self.diagnostics) - 1),
                                                abort=self.node.exited))

    def close(self) -> int:
        """Leave the graph and stop the node; its exit code."""
        self.graph.close()
        return self.node.stop()


class Camera:
    """Publishes frames as a C-arm driver does: a CameraInfo, then the Image, same stamp (and,
    for a frame whose outputs a test waits for, the CameraInfo once more, see ``publish``)."""

    def __init__(self, graph: Graph, reliability: ReliabilityPolicy = ReliabilityPolicy.RELIABLE):
        qos = QoSProfile(depth=10, reliability=reliability)
        self._node = graph.node
        self._image = graph.publisher(Image, "/carm/image", qos)
        self._info = graph.publisher(CameraInfo, "/carm/camera_info", qos)
        wait_until(lambda: self._image.get_subscription_count() and self._info.get_subscription_count(), 30,
                   "the node to subscribe to /carm/image and /carm/camera_info")

    def publish(self, image: Image, K: np.ndarray | None, stamp_ns: int | None = None, info_twice: bool = False) -> int:
        """Publish ``image`` (and a CameraInfo with ``K`` unless None, with ``info_twice`` once
        more after the image); the stamp (default: now)."""
        stamp = time.time_ns() if stamp_ns is None else stamp_ns
        header = Header(stamp=Time(sec=stamp // 1_000_000_000, nanosec=stamp % 1_000_000_000), frame_id="carm_source")
        info = None if K is None else CameraInfo(header=header, height=image.height, width=image.width,
                                                 k=np.asarray(K, dtype=float).ravel().tolist())
        if info is not None:
            self._info.publish(info)
        image.header = header
        self._image.publish(image)
        if info is not None and info_twice:
            # Again, after the image: the node's best-effort reader can lose one (seen while
            # discovery settles), and it refuses an image whose CameraInfo never came rather
            # than pose it with another image's K. The node waits for a late one.
            self._info.publish(info)
        return stamp

    def publish_heard(self, image: Image, K: np.ndarray | None, latest: Callable[[], dict[str, str]],
                      attempts: int = 4, heard_s: float = 5.0) -> tuple[int, dict[str, str]]:
        """``publish`` until the node has handled the frame; its stamp and the node's verdict
        on it (the first /diagnostics values that count it; ``latest`` gives the newest).

        Discovery is two-sided: this side matched the node's readers before the first
        publish, but the node's best-effort readers drop what arrives before they, in turn,
        match these new writers, and no API tells this side when that happened. A lost
        discovery message waits for Fast DDS's next heartbeat (seconds), so a fixed delay is
        no cure: a frame the node has not counted within ``heard_s`` is sent again (a lost
        frame is not counted, so counts stay exact). The image and CameraInfo writers are
        matched independently too, so the node may hear a frame without its CameraInfo and
        reject it for that: such a frame is sent again as well.
        """
        for _ in range(attempts):
            before = latest()
            stamp = self.publish(image, K, info_twice=True)
            try:
                wait_until(lambda: int(latest()["frames_received"]) > int(before["frames_received"]), heard_s,
                           f"the node to count frame {stamp}")
            except GraphError:
                continue
            def handled() -> dict[str, str] | None:
                values = latest()
                return values if frames_handled(values) > frames_handled(before) else None

            verdict = wait_until(handled, VERDICT_TIMEOUT_S, f"the node's verdict on frame {stamp}")
            lost_info = int(verdict["rejected"]) > int(before["rejected"]) and \
                verdict["last_rejection"].startswith(NO_CAMERA_INFO)
            if K is not None and lost_info:
                continue
            return stamp, verdict
        raise AssertionError(f"the node handled none of {attempts} frames sent as a driver would")

    def close(self) -> None:
        self._node.destroy_publisher(self._image)
        self._node.destroy_publisher(self._info)
