"""`rayemb replay --via-node`: a bag played to `rayemb node` in its own process over DDS, and
what the node publishes recorded as ``FrameRecord``s (the ``ThroughNode`` registration of
:func:`rayemb_ros.evaluation.replay.replay`).

The node runs as a separate process on a random ROS_DOMAIN_ID kept on loopback
(:mod:`rayemb_ros.ros.graph`), with the same ``Params`` as an in-process replay (written to a
parameter file). The CT goes in through its ~/load_volume service. Then per image, in bag
order: the CameraInfos stored before it, the image (the bag's raw CDR bytes, published as
they are), and a wait for the node's verdict on that image before the next one (the node
keeps only the newest frame, so an unpaced stream would lose frames). Both are sent again
when the node refused the image for want of its CameraInfo (best-effort delivery lost it),
as an image the node never counted is:

* every estimated frame gives a ~/landmarks message with the image's header, and a /tf
  transform and a ~/pose_with_covariance with its stamp when the pose was accepted;
* every event (pose ok / refused, frame rejected or dropped) publishes /diagnostics, whose
  counters tell which it was, and whose message and last_* values give the reason, latency,
  inliers and reprojection error.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseWithCovarianceStamped
from rclpy.qos import QoSProfile
from sensor_msgs.msg import CameraInfo, Image
from tf2_msgs.msg import TFMessage

from rayemb_ros.estimation.bundle import ct_of
from rayemb_ros.estimation.runner import FRAME_REJECTED
from rayemb_ros.evaluation.records import FrameRecord
from rayemb_ros.evaluation.replay import Registered, ReplayError, Topics
from rayemb_ros.geometry.volume import load_volume
from rayemb_ros.io.bags import IMAGE_TOPIC, INFO_TOPIC, Frame, raw_messages
from rayemb_ros.io.camera_info import NO_CAMERA_INFO
from rayemb_ros.msg import LandmarkArray
from rayemb_ros.params import Params
from rayemb_ros.ros import convert
from rayemb_ros.ros.graph import Domain, Graph, GraphError, NodeProcess, wait_until
from rayemb_ros.ros.node import NODE_NAME, TF_QOS
from rayemb_ros.srv import LoadVolume

START_TIMEOUT_S = 120.0  # process start, torch import, encoder load
LOAD_TIMEOUT_S = 900.0  # a cold CT preload renders its template bank
FRAME_TIMEOUT_S = 180.0  # one estimate, refinement included, on a slow CPU
OUTPUT_TIMEOUT_S = 10.0  # landmarks / TF of a frame the diagnostics say is done
RESEND_AFTER_S = 3.0  # an image the node has not counted by then was lost: send it again
RESENDS = 3


def _values(msg: DiagnosticArray) -> dict[str, str] | None:
    return convert.diagnostics_values(msg, NODE_NAME)


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
    covariance: Any | None = None  # PoseWithCovarianceStamped of an accepted pose


class NodeSession:
    """`rayemb node` in its own process plus our own participant on its private domain."""

    def __init__(self, params: Params, volume_root: str, log_path: Path):
        self.params = params
        domain = Domain.random()
        params_file = log_path.with_name("node_params.yaml")
        ros_params = replace(params, volume="", volume_root=volume_root).as_dict()
        params_file.write_text(yaml.safe_dump({"/**": {"ros__parameters": ros_params}}))
        log_path.write_bytes(b"")
        self.node = NodeProcess(["--params-file", str(params_file)], domain, log_path)
        self.graph = Graph(domain, "rayemb_bag_player")
        self.tf = self.graph.subscribe(TFMessage, "/tf", TF_QOS)
        self.landmarks = self.graph.subscribe(LandmarkArray, f"/{NODE_NAME}/landmarks", 50)
        self.covariances = self.graph.subscribe(PoseWithCovarianceStamped, f"/{NODE_NAME}/pose_with_covariance", 50)
        self.diagnostics = self.graph.subscribe(DiagnosticArray, "/diagnostics", 50)
        qos = QoSProfile(depth=10)  # reliable: the node's best-effort readers match it
        self.image_pub = self.graph.publisher(Image, IMAGE_TOPIC, qos)
        self.info_pub = self.graph.publisher(CameraInfo, INFO_TOPIC, qos)

    def _failed(self, exc: GraphError) -> ReplayError:
        return ReplayError(f"rayemb node: {exc}; its log ends:\n{self.node.log_tail()}")

    def wait(self, predicate, timeout_s: float, what: str) -> Any:
        """The first truthy ``predicate()``; ReplayError on timeout or when the node died."""
        try:
            return wait_until(predicate, timeout_s, what, abort=self.node.exited)
        except GraphError as exc:
            raise self._failed(exc) from exc

    def load_volume(self, path: str) -> LoadVolume.Response:
        try:
            response = self.graph.call(LoadVolume, f"/{NODE_NAME}/load_volume", LoadVolume.Request(path=path),
                                       LOAD_TIMEOUT_S, abort=self.node.exited, ready_timeout_s=START_TIMEOUT_S)
        except GraphError as exc:
            raise self._failed(exc) from exc
        if not response.success:
            raise ReplayError(f"rayemb node did not load {path!r}: {response.message}")
        self.wait(lambda: self.image_pub.get_subscription_count() and self.info_pub.get_subscription_count(),
                   START_TIMEOUT_S, "subscription to the image and camera_info topics")
        return response

    def latest_values(self) -> dict[str, str]:
        """The newest status of the node's diagnostics (waits for one)."""
        def newest():
            return next((v for m in reversed(self.diagnostics.snapshot()) if (v := _values(m))), None)
        return self.wait(newest, START_TIMEOUT_S, "diagnostics")

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
        sent_ns = time.time_ns()
        self.image_pub.publish(image_raw)
        resends = 0

        def counted() -> dict[str, str] | None:
            nonlocal resends
            for msg in self.diagnostics.snapshot(seen_diagnostics):
                values = _values(msg)
                if values and convert.frames_handled(values) > convert.frames_handled(before):
                    return values
            lost = int(self.latest_values()["frames_received"]) == int(before["frames_received"])
            if lost and resends < RESENDS and time.monotonic() - sent > RESEND_AFTER_S * (resends + 1):
                self.image_pub.publish(image_raw)
                resends += 1
            return None

        values = self.wait(counted, FRAME_TIMEOUT_S, f"verdict on the image stamped {stamp_ns}")
        if int(values["frames_estimated"]) == int(before["frames_estimated"]):
            return _Verdict(values, None, None, (time.time_ns() - sent_ns) / 1e6)
        at_ns, landmarks = self.wait(
            lambda: next(((t, m) for t, m in self.landmarks.entries(seen_landmarks)
                          if convert.stamp_ns(m.header) == stamp_ns), None),
            OUTPUT_TIMEOUT_S, f"landmarks of the image stamped {stamp_ns}")
        tf = covariance = None
        if int(values["poses_ok"]) > int(before["poses_ok"]):
            tf = self.wait(lambda: next((t for m in reversed(self.tf.snapshot()) for t in m.transforms
                                          if convert.stamp_ns(t.header) == stamp_ns
                                          and t.child_frame_id == self.params.source_frame), None),
                            OUTPUT_TIMEOUT_S, f"TF of the image stamped {stamp_ns}")
            covariance = self.wait(lambda: next((m for m in reversed(self.covariances.snapshot())
                                                  if convert.stamp_ns(m.header) == stamp_ns), None),
                                    OUTPUT_TIMEOUT_S, f"pose with covariance of the image stamped {stamp_ns}")
        return _Verdict(values, landmarks, tf, (at_ns - sent_ns) / 1e6, covariance)

    def close(self) -> int | None:
        """Stop the node (SIGINT, then kill) and leave the graph; the node's exit code."""
        code = self.node.stop()
        self.graph.close()
        return code


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
        covariance=convert.covariance_from_ros(verdict.covariance.pose.covariance) if ok else None,
        mode=values["last_mode"],
        fallback=values["last_fallback"],
    )


def volume_request(volume_spec: str) -> tuple[str, str]:
    """(path to request, volume_root that allows it): the folder holding the CT (and, for a
    prepared bundle, the bundle too)."""
    if volume_spec == "example":
        return volume_spec, "~"
    path = Path(volume_spec).expanduser().resolve()
    folders = [path.parent] + ([Path(ct).parent] if (ct := ct_of(str(path))) not in (str(path), "example") else [])
    return str(path), os.path.commonpath([str(f) for f in folders])


def play_through_node(bag: Path, volume_spec: str, params: Params, topics: Topics, log_path: Path,
                      progress: dict[str, Any]) -> list[FrameRecord]:
    """Register every image of the bag through a fresh `rayemb node` process."""
    from tqdm import tqdm

    path, root = volume_request(volume_spec)
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
        raise ReplayError(f"rayemb node exited with code {code}:\n{session.node.log_tail()}")
    return records


class ThroughNode:
    """The replay's frames registered by `rayemb node` in its own process over DDS."""

    mode = "via node (DDS)"
    knows_refused_poses = False  # the node publishes final poses only
    notes = ("Registered by `rayemb node` in its own process over DDS; latency = the node's, from receiving the "
             "image to publishing its result. The node publishes final poses only, so refused frames' PnP poses "
             "(and the trust numbers) are not known in this mode.",)

    def register(self, bag: Path, volume_spec: str, params: Params, topics: Topics, out: Path,
                 progress: dict[str, Any]) -> Registered:
        volume = load_volume(ct_of(volume_spec))  # fails here, before a node starts, for a bad path
        records = play_through_node(bag, volume_spec, params, topics, out / "node.log", progress)
        return Registered(records, volume, None)
