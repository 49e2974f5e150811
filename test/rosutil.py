"""Helpers for tests that talk to real ROS 2 processes over DDS.

Each ``Domain`` is a random ROS_DOMAIN_ID kept on loopback, so that test runs (and other
people's, on the same machine) do not hear each other. ``NodeProcess`` runs `rayemb node`
as its own process; ``Graph`` is the test's side of the graph: an rclpy context on the same
domain, spun on a background thread, with helpers to publish, collect and call services.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

REPO = Path(__file__).resolve().parents[1]
RAYEMB = Path(sys.executable).parent / "rayemb"
# How long a camera's first frame is watched for a rejection: the node waits up to
# runner._FIRST_INFO_WAIT_S (1 s) for a first CameraInfo before it rejects the frame.
FIRST_CAMERA_INFO_SETTLE_S = 2.0


@dataclass(frozen=True)
class Domain:
    id: int

    @classmethod
    def random(cls) -> Domain:
        # 1..100: valid for Fast DDS's port mapping; 0 is everyone's default.
        return cls(random.SystemRandom().randint(1, 100))

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            ROS_DOMAIN_ID=str(self.id),
            ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
            # 2 shared cores: keep the node's numeric libraries to one thread each.
            OMP_NUM_THREADS="1",
            OPENBLAS_NUM_THREADS="1",
            PYTHONUNBUFFERED="1",
        )
        env.update(extra)
        return env


def wait_until(predicate: Callable[[], Any], timeout_s: float, what: str, poll_s: float = 0.05) -> Any:
    """The first truthy value of ``predicate()``; AssertionError naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(poll_s)


class NodeProcess:
    """`rayemb node ARGS...` in its own process; its output goes to ``log_path``."""

    def __init__(self, args: list[str], domain: Domain, log_path: Path, **env: str):
        self.args = args
        self.domain = domain
        self.log_path = log_path
        self._env = domain.env(**env)
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(RAYEMB), "node", *self.args], stdout=log, stderr=subprocess.STDOUT, env=self._env, cwd=REPO
            )

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait(self, timeout_s: float) -> int:
        return self.proc.wait(timeout_s)

    def stop(self, sig: int = signal.SIGINT, timeout_s: float = 15.0) -> int:
        """Signal the node and wait for it (killed when it does not stop in time)."""
        if not self.alive:
            return self.proc.returncode
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"node ignored signal {sig} for {timeout_s} s:\n{self.log()[-3000:]}")


class Inbox:
    """Messages received on one topic, in order, with their receipt times."""

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.received_ns: list[int] = []  # wall-clock receipt time of each message
        self._lock = threading.Lock()

    def __call__(self, msg: Any) -> None:
        with self._lock:
            self.messages.append(msg)
            self.received_ns.append(time.time_ns())

    def snapshot(self) -> list[Any]:
        with self._lock:
            return list(self.messages)

    def __len__(self) -> int:
        with self._lock:
            return len(self.messages)

    def wait_for(self, predicate: Callable[[Any], bool], timeout_s: float, what: str, since: int = 0) -> Any:
        """The first message from index ``since`` on for which ``predicate`` holds."""
        return wait_until(lambda: next((m for m in self.snapshot()[since:] if predicate(m)), None), timeout_s, what)


class Graph:
    """The test's own participant on a domain, spinning on a background thread."""

    def __init__(self, domain: Domain, name: str = "rayemb_test"):
        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain.id)
        self.node = Node(name, context=self.context)
        self._executor = SingleThreadedExecutor(context=self.context)
        self._executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while self.context.ok():
            try:
                self._executor.spin_once(timeout_sec=0.05)
            except Exception:  # the context went down while spinning: closing
                if self.context.ok():
                    raise

    def subscribe(self, msg_type: type, topic: str, qos: QoSProfile | int = 10) -> Inbox:
        inbox = Inbox()
        self.node.create_subscription(msg_type, topic, inbox, qos)
        return inbox

    def publisher(self, msg_type: type, topic: str, qos: QoSProfile | int = 10):
        return self.node.create_publisher(msg_type, topic, qos)

    def call(self, srv_type: type, name: str, request: Any, timeout_s: float = 60.0) -> Any:
        client = self.node.create_client(srv_type, name)
        try:
            if not client.wait_for_service(timeout_sec=timeout_s):
                raise AssertionError(f"service {name} not available after {timeout_s} s")
            done = threading.Event()
            future = client.call_async(request)
            future.add_done_callback(lambda _: done.set())
            if not done.wait(timeout_s):
                raise AssertionError(f"service {name} did not answer within {timeout_s} s")
            return future.result()
        finally:
            self.node.destroy_client(client)

    def close(self) -> None:
        self.context.try_shutdown()
        self._thread.join(5.0)
        self._executor.shutdown()
        self.node.destroy_node()


def stamp_ns(header: Header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


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
        self._info_heard = False  # whether the node is known to have had a CameraInfo from us

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

    def publish_heard(self, image: Image, K: np.ndarray | None, frames_received: Callable[[], int],
                      attempts: int = 4, wait_s: float = 5.0, rejected: Callable[[], int] | None = None) -> int:
        """``publish`` until the node counts the frame as received (``frames_received``, its
        /diagnostics counter, goes up); the stamp of the frame it heard.

        Discovery is two-sided: this side matched the node's readers before the first
        publish, but the node's best-effort readers drop what arrives before they, in turn,
        match these new writers, and no API tells this side when that happened. A lost
        discovery message waits for Fast DDS's next heartbeat (seconds), so a fixed delay is
        no cure: resend instead (a lost frame is not counted, so counts stay exact).

        The image and CameraInfo writers are matched independently, so the node may hear this
        camera's first image without its CameraInfo and reject it. With ``rejected`` (the
        node's rejection counter), the first frame with a K is resent until the node has not
        rejected it within the time it waits for a first CameraInfo.
        """
        confirm = rejected is not None and K is not None and not self._info_heard
        for _ in range(attempts):
            before = frames_received()
            rejected_before = rejected() if confirm else 0
            stamp = self.publish(image, K, info_twice=True)
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline and frames_received() <= before:
                time.sleep(0.05)
            if frames_received() <= before:
                continue
            if confirm:
                settle = time.monotonic() + FIRST_CAMERA_INFO_SETTLE_S
                while time.monotonic() < settle and rejected() == rejected_before:
                    time.sleep(0.05)
                if rejected() != rejected_before:
                    continue  # heard without its CameraInfo: send both again
                self._info_heard = True
            return stamp
        raise AssertionError(f"the node counted none of {attempts} frames sent {wait_s:.0f} s apart"
                             + (" with their CameraInfo" if confirm else ""))

    def close(self) -> None:
        self._node.destroy_publisher(self._image)
        self._node.destroy_publisher(self._info)
