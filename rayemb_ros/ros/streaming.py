"""A sequence streamed to `rayemb node` at its frame rate, as a C-arm streams fluoroscopy, and
what came back: how many frames got a pose, how accurate, how late (``make demo``'s last step).

Unlike ``bag_player`` (one image at a time, each waiting for the node's verdict), the frames go
out on their bag stamps' schedule whatever the node does: a node slower than the frame rate
keeps only the newest frame (the rest are dropped as stale), so the share of frames posed and
the end-to-end latency (image published -> its TF received) are what a robot would see, and a
latency that grows over the stream would show a queue building.

ROS only to publish and listen; the numbers come from ``evaluation.metrics``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rayemb_ros.evaluation.metrics import GFR_THRESHOLDS_MM, frame_mtre, gfr, latency_summary, percentiles, target_points
from rayemb_ros.evaluation.replay import ReplayError, Topics
from rayemb_ros.evaluation.units import mm, ms
from rayemb_ros.geometry.volume import load_volume
from rayemb_ros.io.bags import raw_messages
from rayemb_ros.params import Params
from rayemb_ros.ros import convert
from rayemb_ros.ros.bag_player import NodeSession, volume_request
from rayemb_ros.estimation.bundle import ct_of

# The first image warms the node's reader up (a best-effort reader drops what comes before it
# has matched a new writer): it is sent this long before the stream's first stamp, so that its
# pose is too old to be any frame's prior.
WARM_UP_BEFORE_S = 10.0
ARRIVAL_TIMEOUT_S = 5.0  # after the last frame: images the node has not received by then were lost
IDLE_TIMEOUT_S = 120.0  # ... and the node's last estimate, refinement included, on a slow CPU


@dataclass
class Stream:
    """What streaming a sequence to the node gave (``metrics``: ``stream.json``)."""

    metrics: dict[str, Any]

    def summary(self) -> str:
        m = self.metrics
        lines = [
            f"streamed {m['frames_sent']} frames at {m['fps']:.1f} fps to `rayemb node` "
            f"(tracking {'on' if m['tracking'] else 'off'}, refinement {'on' if m['refine'] else 'off'}): "
            f"{m['frames_posed']} posed ({m['posed_percent']:.0f} %), {m['dropped_stale']} dropped as stale "
            f"(the node keeps the newest frame), {m['refused']} refused, {m['lost']} never reached it (replaced in the "
            f"middleware's one-frame queue, or lost)",
            f"posed frames: median mTRE {mm(m['mtre_posed_mm']['p50'])}, 95th {mm(m['mtre_posed_mm']['p95'])}, "
            f"{m['published_over_10_mm']} published > 10 mm off",
            f"end to end (image published -> its TF received): p50 {ms(m['latency_end_to_end_ms']['p50'])}, "
            f"p95 {ms(m['latency_end_to_end_ms']['p95'])}; p50 over the first / second half of the stream "
            f"{ms(m['latency_p50_halves_ms'][0])} / {ms(m['latency_p50_halves_ms'][1])} (a queue would grow it)",
        ]
        return "\n".join(lines)


def stream_through_node(bag: Path, volume_spec: str, params: Params, log_path: Path,
                        topics: Topics = Topics()) -> Stream:
    """Stream the bag's images (with their CameraInfos) to a fresh `rayemb node` on the bag's
    schedule, and evaluate what it published against the bag's ground truth. ReplayError when
    the node cannot load the CT or dies."""
    frames = list(topics.read(bag))
    if len(frames) < 2 or any(f.T_ct_source_gt is None for f in frames):
        raise ReplayError(f"{bag}: streaming needs a sequence of at least 2 frames with ground truth")
    messages = list(raw_messages(bag, [topics.info, topics.image]))
    path, root = volume_request(volume_spec)
    session = NodeSession(params, root, log_path)
    try:
        session.load_volume(path)
        sent_ns, before = _stream(session, messages, topics, frames[0].stamp_ns)
        values = _wait_idle(session, before, len(frames))
        posed = {convert.stamp_ns(t.header): (at_ns, convert.transform_to_matrix(t.transform))
                 for at_ns, m in session.tf.entries() for t in m.transforms
                 if t.child_frame_id == params.source_frame}
    finally:
        code = session.close()
    if code not in (0, None):
        raise ReplayError(f"rayemb node exited with code {code}:\n{session.node.log_tail()}")
    points = target_points(load_volume(ct_of(volume_spec)))
    errors, latencies = [], []
    for frame in frames:
        at_ns, T = posed.get(frame.stamp_ns, (None, None))
        errors.append(frame_mtre(T, frame.T_ct_source_gt, points))
        if at_ns is not None:
            latencies.append((at_ns - sent_ns[frame.stamp_ns]) / 1e6)
    return Stream(_metrics(frames, errors, latencies, values, before, params))


def _stream(session: NodeSession, messages, topics: Topics, first_stamp_ns: int) -> tuple[dict[int, int], dict[str, str]]:
    """Publish the warm-up image, wait for the node's verdict on it, then every message on the
    bag's schedule; when each image went out (ns, by stamp) and the node's counters before."""
    from sensor_msgs.msg import CameraInfo, Image

    warm_up_ns = first_stamp_ns - int(WARM_UP_BEFORE_S * 1e9)
    image = next(m for m in messages if m.topic == topics.image)
    info = next(m for m in messages if m.topic == topics.info)
    session.verdict(_restamped(image.data, Image, warm_up_ns), warm_up_ns, [_restamped(info.data, CameraInfo, warm_up_ns)])
    before = session.latest_values()
    sent_ns: dict[int, int] = {}
    start, first_log = time.monotonic(), messages[0].log_time_ns
    for message in messages:
        due = start + (message.log_time_ns - first_log) / 1e9
        time.sleep(max(0.0, due - time.monotonic()))  # the C-arm's frame clock, not a wait for the node
        publisher = session.image_pub if message.topic == topics.image else session.info_pub
        publisher.publish(message.data)
        if message.topic == topics.image:
            sent_ns[message.log_time_ns] = time.time_ns()
    return sent_ns, before


def _restamped(raw: bytes, kind: type, stamp_ns: int) -> bytes:
    """A serialized message of type ``kind`` with its header stamped ``stamp_ns``."""
    from rclpy.serialization import deserialize_message, serialize_message

    msg = deserialize_message(raw, kind)
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    return serialize_message(msg)


def _wait_idle(session: NodeSession, before: dict[str, str], count: int) -> dict[str, str]:
    """The node's counters once it is done with every image of the stream that reached it."""
    received = int(before["frames_received"]) + count
    try:
        session.wait(lambda: int(session.latest_values()["frames_received"]) >= received, ARRIVAL_TIMEOUT_S,
                      "every streamed image to arrive")
    except ReplayError:
        pass  # best-effort delivery lost some: they count as lost, the rest are still judged
    return session.wait(lambda: (v := session.latest_values()) and convert.frames_handled(v) == int(v["frames_received"])
                         and v, IDLE_TIMEOUT_S, "the node to finish the stream")


def _metrics(frames, errors: list[float], latencies: list[float], values: dict[str, str], before: dict[str, str],
             params: Params) -> dict[str, Any]:
    def delta(key: str) -> int:
        return int(values[key]) - int(before[key])

    posed = [e for e in errors if math.isfinite(e)]
    fps = (len(frames) - 1) / ((frames[-1].stamp_ns - frames[0].stamp_ns) / 1e9)
    half = len(latencies) // 2
    return {
        "fps": fps,
        "tracking": params.tracking,
        "refine": params.refine,
        "frames_sent": len(frames),
        "frames_posed": len(posed),
        "posed_percent": 100.0 * len(posed) / len(frames),
        "dropped_stale": delta("dropped_stale"),
        "refused": delta("frames_estimated") - delta("poses_ok"),
        "rejected": delta("rejected"),
        "lost": len(frames) - delta("frames_received"),
        "poses_from_prior": delta("poses_from_prior"),
        "mtre_mm": percentiles(errors),
        "mtre_posed_mm": percentiles(posed),
        "gfr_percent": {f"{d:g}": gfr(errors, d) for d in GFR_THRESHOLDS_MM},
        "published_over_10_mm": sum(e > 10.0 for e in posed),
        "latency_end_to_end_ms": latency_summary(latencies),
        "latency_p50_halves_ms": [float(np.median(latencies[:half])) if half else math.nan,
                                  float(np.median(latencies[half:])) if latencies else math.nan],
    }
