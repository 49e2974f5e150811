"""`rayemb replay --via-node`: a bag played to `rayemb node` in its own process over DDS, and
what the node publishes recorded as ``records.FrameRecord``s.

The node runs as a separate process on a random ROS_DOMAIN_ID kept on loopback
(ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST), with the same ``Params`` as an in-process replay
(written to a parameter file). The CT goes in through its ~/load_volume service. Then per
image, in bag order: the CameraInfos stored before it, the image (the bag's raw CDR bytes,
published as they are), and a wait for the node's verdict on that image before the next one
(the node keeps only the newest frame, so an unpaced stream would lose frames). Both are sent
again when the node refused the image for want of its CameraInfo (best-effort delivery lost
it), as an image the node never counted is:

* every estimated frame gives a ~/landmarks message with the image's header, and a /tf
  transform with its stamp when the pose was accepted;
* every event (pose ok / refused, frame rejected or dropped) publishes /diagnostics, whose
  counters tell which it was, and whose message and last_* values give the reason, latency,
  inliers and reprojection error.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import rclpy
import yaml
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile
from sensor_msgs.msg import CameraInfo, Image
from tf2_msgs.msg import TFMessage

from rayemb_ros.bags import IMAGE_TOPIC, INFO_TOPIC, Frame, raw_messages
from rayemb_ros.camera import NO_CAMERA_INFO
from rayemb_ros.msg import LandmarkArray
from rayemb_ros.params import Params
from rayemb_ros.records import FrameRecord
from rayemb_ros.replay import ReplayError, Topics
from rayemb_ros.ros import convert
from rayemb_ros.ros.node import NODE_NAME, TF_QOS
from rayemb_ros.runner import FRAME_REJECTED
from rayemb_ros.srv import LoadVolume

START_TIMEOUT_S = 120.0  # process start, torch import, encoder load
LOAD_TIMEOUT_S = 900.0  # a cold CT preload renders its template bank
FRAME_TIMEOUT_S = 180.0  # one estimate, refinement included, on a slow CPU
OUTPUT_TIMEOUT_S = 10.0  # landmarks / TF of a frame the diagnostics say is done
RESEND_AFTER_S = 3.0  # an image the node has not counted by then was lost: send it again
RESENDS = 3
# Counters of the node's diagnostics that each count one image handled.
_HANDLED = ("frames_estimated", "rejected", "dropped_stale", "dropped_no_volume")


class _Inbox:
    """Messages of one topic with their receipt times (monotonic s), in order."""

    def __init__(self) -> None:
        self.items: list[tuple[float, Any]] = []
        self._lock = threading.Lock()

    def __call__(self, msg: Any) -> None:
        with self._lock:
            self.items.append((time.monotonic(), msg))

    def since(self, start: int) -> list[tuple[float, Any]]:
        with self._lock:
            return self.items[start:]

    def __len__(self) -> int:
        with self._lock:
            return len(self.items)


def _values(msg: DiagnosticArray) -> dict[str, str] | None:
    """The node's status values in a /diagnostics message (None when it holds none)."""
    status = next((s for s in msg.status if s.name.startswith(NODE_NAME)), None)
    return None if status is None else {kv.key: kv.value for kv in status.values} | {"message": status.message}


def _handled(values: dict[str, str]) -> int:
    return sum(int(values[k]) for k in _HANDLED)


def _camera_info_missed(values: dict[str, str]) -> bool:
    """Whether the node refused the image it just counted for want of its CameraInfo."""
    return values["message"].startswith(FRAME_REJECTED + NO_CAMERA_INFO)


@dataclass
class _Verdict:
    """What the node made of one image."""

    values: dict[str, str]  # the diagnostics that counted it
    landmarks: LandmarkArray | None
    tf: Any | None  # TransformStamped of an accepted pose
    roundtrip_ms: float


class NodeSession:
    """`rayemb node` in its own process plus our own participant on its private domain."""

    def __init__(self, params: Params, volume_root: str, log_path: Path):
        self.params = params
        self.domain_id = random.SystemRandom().randint(1, 100)  # 0 is everyone's default
        # Our participant must stay on loopback too; rclpy reads this at init.
        os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
        env = dict(os.environ, ROS_DOMAIN_ID=str(self.domain_id), PYTHONUNBUFFERED="1")
        params_file = log_path.with_name("node_params.yaml")
        ros_params = replace(params, volume="", volume_root=volume_root).as_dict()
        params_file.write_text(yaml.safe_dump({"/**": {"ros__parameters": ros_params}}))
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "rayemb_ros.cli", "node", "--params-file", str(params_file)],
                stdout=log, stderr=subprocess.STDOUT, env=env,
            )
        self.context = Context()
        rclpy.init(context=self.context, domain_id=self.domain_id)
        self.node = Node("rayemb_bag_player", context=self.context)
        self.tf, self.landmarks, self.diagnostics = _Inbox(), _Inbox(), _Inbox()
        self.node.create_subscription(TFMessage, "/tf", self.tf, TF_QOS)
        self.node.create_subscription(LandmarkArray, f"/{NODE_NAME}/landmarks", self.landmarks, 50)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics, 50)
        qos = QoSProfile(depth=10)  # reliable: the node's best-effort readers match it
        self.image_pub = self.node.create_publisher(Image, IMAGE_TOPIC, qos)
        self.info_pub = self.node.create_publisher(CameraInfo, INFO_TOPIC, qos)
        self._executor = SingleThreadedExecutor(context=self.context)
        self._executor.add_node(self.node)
        self._spinner = threading.Thread(target=self._executor.spin, daemon=True)  # until shutdown()
        self._spinner.start()

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def _wait(self, predicate: Callable[[], Any], timeout_s: float, what: str) -> Any:
        """The first truthy ``predicate()``; ReplayError on timeout or when the node died."""
        deadline = time.monotonic() + timeout_s
        while not (value := predicate()):
            if self.proc.poll() is not None:
                raise ReplayError(f"rayemb node exited (code {self.proc.returncode}) while waiting for {what}:\n"
                                  f"{self.log_tail()}")
            if time.monotonic() > deadline:
                raise ReplayError(f"no {what} from rayemb node within {timeout_s:.0f} s:\n{self.log_tail()}")
            time.sleep(0.02)
        return value

    def load_volume(self, path: str) -> LoadVolume.Response:
        client = self.node.create_client(LoadVolume, f"/{NODE_NAME}/load_volume")
        self._wait(lambda: client.service_is_ready(), START_TIMEOUT_S, "~/load_volume service")
        future = client.call_async(LoadVolume.Request(path=path))
        response = self._wait(lambda: future.done() and future.result(), LOAD_TIMEOUT_S, "answer from ~/load_volume")
        self.node.destroy_client(client)
        if not response.success:
            raise ReplayError(f"rayemb node did not load {path!r}: {response.message}")
        self._wait(lambda: self.image_pub.get_subscription_count() and self.info_pub.get_subscription_count(),
                   START_TIMEOUT_S, "subscription to the image and camera_info topics")
        return response

    def latest_values(self) -> dict[str, str]:
        """The newest status of the node's diagnostics (waits for one)."""
        def newest():
            return next((v for _, m in reversed(self.diagnostics.since(0)) if (v := _values(m))), None)
        return self._wait(newest, START_TIMEOUT_S, "diagnostics")

    def verdict(self, image_raw: bytes, stamp_ns: int, infos_raw: list[bytes]) -> _Verdict:
        """Publish one image after the CameraInfos stored before it, and wait until the node
        has handled it. The node's CameraInfo subscription is best-effort, so one can be lost
        on the way; the node then refuses the image (it never poses it with another image's
        K), and both are sent again, as a lost image is."""
        for _ in range(RESENDS + 1):
            for info in infos_raw:
                self.info_pub.publish(info)  # the node pairs it with its image by stamp
            verdict = self._verdict(image_raw, stamp_ns)
            if not _camera_info_missed(verdict.values):
                break
        return verdict

    def _verdict(self, image_raw: bytes, stamp_ns: int) -> _Verdict:
        before = self.latest_values()
        seen_diagnostics, seen_landmarks = len(self.diagnostics), len(self.landmarks)
        sent = time.monotonic()
        self.image_pub.publish(image_raw)
        resends = 0

        def counted() -> dict[str, str] | None:
            nonlocal resends
            for _, msg in self.diagnostics.since(seen_diagnostics):
                values = _values(msg)
                if values and _handled(values) > _handled(before):
                    return values
            lost = int(self.latest_values()["frames_received"]) == int(before["frames_received"])
            if lost and resends < RESENDS and time.monotonic() - sent > RESEND_AFTER_S * (resends + 1):
                self.image_pub.publish(image_raw)
                resends += 1
            return None

        values = self._wait(counted, FRAME_TIMEOUT_S, f"verdict on the image stamped {stamp_ns}")
        if int(values["frames_estimated"]) == int(before["frames_estimated"]):
            return _Verdict(values, None, None, (time.monotonic() - sent) * 1e3)
        at, landmarks = self._wait(
            lambda: next(((t, m) for t, m in self.landmarks.since(seen_landmarks)
                          if convert.stamp_ns(m.header) == stamp_ns), None),
            OUTPUT_TIMEOUT_S, f"landmarks of the image stamped {stamp_ns}")
        tf = None
        if int(values["poses_ok"]) > int(before["poses_ok"]):
            tf = self._wait(lambda: next((t for _, m in reversed(self.tf.since(0)) for t in m.transforms
                                          if convert.stamp_ns(t.header) == stamp_ns
                                          and t.child_frame_id == self.params.source_frame), None),
                            OUTPUT_TIMEOUT_S, f"TF of the image stamped {stamp_ns}")
        return _Verdict(values, landmarks, tf, (at - sent) * 1e3)

    def close(self) -> int | None:
        """Stop the node (SIGINT, then kill) and leave the graph; the node's exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15.0)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._executor.shutdown()
        self._spinner.join(5.0)
        self.node.destroy_node()
        self.context.try_shutdown()
        return self.proc.returncode


def record_of(index: int, frame: Frame, verdict: _Verdict) -> FrameRecord:
    """The FrameRecord of what the node published for one image."""
    values = verdict.values
    if verdict.landmarks is None:  # rejected or dropped: the estimator never saw it
        reason = values["last_rejection"] if "rejected" in values["message"] else values["message"]
        return FrameRecord.unusable(index, frame, reason)
    ok = verdict.tf is not None
    return FrameRecord(
        index=index,
        stamp_ns=frame.stamp_ns,
        ok=ok,
        reason="" if ok else values["message"].removeprefix("pose refused: "),
        T_ct_source=convert.transform_to_matrix(verdict.tf.transform) if ok else None,
        T_initial=None,  # not published by the node
        landmarks=convert.landmarks_from_msg(verdict.landmarks),
        num_inliers=int(values["last_inliers"]),
        reprojection_error_px=float(values["last_reprojection_error_px"]),
        latency_ms=float(values["last_latency_ms"]),
        K=frame.K,
        T_gt=frame.T_ct_source_gt,
        extra={"roundtrip_ms": verdict.roundtrip_ms},
    )


def _volume_request(volume_spec: str) -> tuple[str, str]:
    """(path to request, volume_root that allows it): a file's own folder is the root."""
    if volume_spec == "example":
        return volume_spec, "~"
    path = Path(volume_spec).expanduser().resolve()
    return str(path), str(path.parent)


def play_through_node(bag: Path, volume_spec: str, params: Params, topics: Topics, log_path: Path,
                      progress: dict[str, Any]) -> list[FrameRecord]:
    """Register every image of the bag through a fresh `rayemb node` process."""
    from tqdm import tqdm

    path, root = _volume_request(volume_spec)
    session = NodeSession(params, root, log_path)
    records: list[FrameRecord] = []
    try:
        session.load_volume(path)
        frames = topics.read(bag)
        bar = tqdm(**progress)
        infos: list[bytes] = []
        for raw in raw_messages(bag, [topics.info, topics.image]):
            if raw.topic == topics.info:
                infos.append(raw.data)
                continue
            frame = next(frames)  # the same image, decoded, with its K and ground truth
            records.append(record_of(len(records), frame, session.verdict(raw.data, frame.stamp_ns, infos)))
            infos = []
            bar.update()
        bar.close()
    finally:
        code = session.close()
    if code not in (0, None):
        raise ReplayError(f"rayemb node exited with code {code}:\n{session.log_tail()}")
    return records
