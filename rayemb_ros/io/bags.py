"""rosbag2 bags of C-arm frames, written and read with ``rosbags`` (pure Python, no rclpy).

The layout is the contract's (../shared/CONTRACT.md, "Bags"): per frame, with one stamp,

* ``/carm/image``       sensor_msgs/msg/Image (frame_id = the source frame),
* ``/carm/camera_info`` sensor_msgs/msg/CameraInfo (k, p = [K | 0], no distortion),
* ``/carm/pose_gt``     geometry_msgs/msg/PoseStamped, optional: frame ``ct``, T_ct_source
  in METRES (ROS units), quaternion x, y, z, w.

Python-side poses are in millimetres, like every pose outside ROS messages. mcap is written
by default; sqlite3 is written on request and read like mcap. ``raw_messages`` gives the
serialized CDR of every message in bag order: rclpy publishes those bytes as they are.
"""

from __future__ import annotations

import bisect
import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from jaxtyping import Float
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from rosbags.typesys.store import Typestore

from rayemb_ros.errors import InputError
from rayemb_ros.geometry.camera import pose_from_ros, pose_to_ros
from rayemb_ros.io.camera_info import CAMERA_INFO_HISTORY, camera_info_for_image
from rayemb_ros.io.images import ImageError, decode_image, encode_image, to_encoding_range

IMAGE_TOPIC = "/carm/image"
INFO_TOPIC = "/carm/camera_info"
POSE_TOPIC = "/carm/pose_gt"
PRIOR_TOPIC = "/carm/pose_prior"  # a rough pose from outside (the C-arm's readout), for tracking
SOURCE_FRAME = "carm_source"
CT_FRAME = "ct"

IMAGE_TYPE = "sensor_msgs/msg/Image"
INFO_TYPE = "sensor_msgs/msg/CameraInfo"
POSE_TYPE = "geometry_msgs/msg/PoseStamped"

STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}


@functools.cache
def typestore() -> Typestore:
    """Message definitions of the ROS 2 distribution the project's rclpy wheels are (Kilted)."""
    return get_typestore(Stores.ROS2_KILTED)


@dataclass
class Frame:
    """One C-arm frame of a bag.

    Reading: ``image`` is the decoded grey image (float32, the encoding's values) or the
    ImageError that makes the frame unusable; ``K`` is None when no CameraInfo came with it.
    Writing: ``image`` is any float image; it is scaled to the full range of ``encoding``
    (``images.to_encoding_range``) before encoding.
    """

    stamp_ns: int
    image: Float[np.ndarray, "H W"] | ImageError
    K: Float[np.ndarray, "3 3"] | None
    T_ct_source_gt: Float[np.ndarray, "4 4"] | None = None  # mm
    encoding: str = "mono16"
    K_missing: str = ""  # reading: why K is None though CameraInfos came before the image
    T_prior: Float[np.ndarray, "4 4"] | None = None  # mm; writing: a rough pose from outside, on the prior topic


@dataclass(frozen=True)
class RawMessage:
    """One serialized message as stored: CDR bytes that rclpy can publish or deserialize."""

    topic: str
    msgtype: str
    log_time_ns: int
    data: bytes


def _header(stamp_ns: int, frame_id: str):
    types = typestore().types
    stamp = types["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
    return types["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id)


def _stamp_ns(header) -> int:
    return int(header.stamp.sec) * 10**9 + int(header.stamp.nanosec)


def _messages(frame: Frame, source_frame: str, ct_frame: str) -> dict[str, object]:
    """The image, camera info and (when known) ground-truth pose messages of one frame."""
    if isinstance(frame.image, ImageError):
        raise ValueError(f"frame {frame.stamp_ns} has no image to write: {frame.image}")
    types = typestore().types
    height, width = frame.image.shape
    data, step = encode_image(to_encoding_range(frame.image, frame.encoding), frame.encoding)
    out: dict[str, object] = {
        "image": types[IMAGE_TYPE](
            header=_header(frame.stamp_ns, source_frame), height=height, width=width, encoding=frame.encoding,
            is_bigendian=0, step=step, data=np.frombuffer(data, dtype=np.uint8),
        ),
        "info": types[INFO_TYPE](
            header=_header(frame.stamp_ns, source_frame), height=height, width=width,
            distortion_model="plumb_bob", d=np.zeros(0), k=np.asarray(frame.K, dtype=float).ravel(),
            r=np.eye(3).ravel(), p=np.hstack([frame.K, np.zeros((3, 1))]).ravel(), binning_x=0, binning_y=0,
            roi=types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
        ),
    }
    for key, T in (("pose", frame.T_ct_source_gt), ("prior", frame.T_prior)):
        if T is not None:
            position, q = pose_to_ros(T)
            out[key] = types[POSE_TYPE](
                header=_header(frame.stamp_ns, ct_frame),
                pose=types["geometry_msgs/msg/Pose"](
                    position=types["geometry_msgs/msg/Point"](x=position[0], y=position[1], z=position[2]),
                    orientation=types["geometry_msgs/msg/Quaternion"](x=q[0], y=q[1], z=q[2], w=q[3]),
                ),
            )
    return out


def write_bag(
    path: str | Path,
    frames: Iterable[Frame],
    *,
    storage: str = "mcap",
    image_topic: str = IMAGE_TOPIC,
    info_topic: str = INFO_TOPIC,
    pose_topic: str | None = POSE_TOPIC,
    prior_topic: str = PRIOR_TOPIC,
    source_frame: str = SOURCE_FRAME,
    ct_frame: str = CT_FRAME,
) -> int:
    """Write frames (consumed lazily) to a new rosbag2 directory; returns the frame count.

    Per frame the camera info, pose and prior go first, then the image, all with the frame's
    stamp as header stamp and log time, so a live replay never shows an image before its K.
    ``pose_topic=None`` leaves out the ground truth; the prior topic is there only when a
    frame has a prior (``Frame.T_prior``).
    """
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists already; a bag is written to a new directory")
    if storage not in STORAGES:
        raise ValueError(f"storage must be one of {list(STORAGES)}, got {storage!r}")
    count = 0
    with Writer(path, version=Writer.VERSION_LATEST, storage_plugin=STORAGES[storage]) as writer:
        conns = {
            "info": writer.add_connection(info_topic, INFO_TYPE, typestore=typestore()),
            "image": writer.add_connection(image_topic, IMAGE_TYPE, typestore=typestore()),
        }
        if pose_topic is not None:
            conns["pose"] = writer.add_connection(pose_topic, POSE_TYPE, typestore=typestore())
        for frame in frames:
            msgs = _messages(frame, source_frame, ct_frame)
            if "prior" in msgs and "prior" not in conns:
                conns["prior"] = writer.add_connection(prior_topic, POSE_TYPE, typestore=typestore())
            for key in ("info", "pose", "prior", "image"):
                if key in msgs and key in conns:
                    raw = typestore().serialize_cdr(msgs[key], conns[key].msgtype)
                    writer.write(conns[key], frame.stamp_ns, raw)
            count += 1
    return count


class BagError(InputError):
    """A bag that cannot be read; the message says why."""


def bag_topics(path: str | Path) -> dict[str, str]:
    """Every topic of a bag with its message type (``sensor_msgs/msg/Image``, ...); BagError
    for a folder that is not a readable rosbag2."""
    path = Path(path)
    if not path.is_dir():
        raise BagError(f"no bag folder at {path}")
    try:
        with Reader(path) as reader:
            return {c.topic: c.msgtype for c in reader.connections}
    except Exception as exc:  # rosbags raises several types for a folder that is not a bag
        raise BagError(f"cannot read the bag {path}: {exc}".splitlines()[0]) from exc


def raw_messages(path: str | Path, topics: Iterable[str] | None = None) -> Iterator[RawMessage]:
    """Every message of the bag (or of ``topics``) in bag order, as serialized CDR."""
    wanted = None if topics is None else set(topics)
    with Reader(path) as reader:
        conns = [c for c in reader.connections if wanted is None or c.topic in wanted]
        if not conns:  # rosbags reads every connection when given none
            return
        for conn, log_time, data in reader.messages(connections=conns):
            yield RawMessage(conn.topic, conn.msgtype, int(log_time), bytes(data))


def _decode(raw: RawMessage):
    return typestore().deserialize_cdr(raw.data, raw.msgtype)


def _pose_mm(msg) -> Float[np.ndarray, "4 4"]:
    """A geometry_msgs/PoseStamped's pose as a 4x4 matrix in mm."""
    p, q = msg.pose.position, msg.pose.orientation
    return pose_from_ros(np.array([p.x, p.y, p.z]), np.array([q.x, q.y, q.z, q.w]))


@dataclass(frozen=True)
class StampedPose:
    stamp_ns: int
    frame_id: str
    T: Float[np.ndarray, "4 4"]  # mm


def read_poses(path: str | Path, topic: str) -> list[StampedPose]:
    """Every geometry_msgs/PoseStamped on ``topic`` (e.g. a pose prior), in bag order."""
    return [StampedPose(_stamp_ns(msg.header), msg.header.frame_id, _pose_mm(msg))
            for msg in map(_decode, raw_messages(path, [topic]))]


def read_bag(
    path: str | Path,
    *,
    image_topic: str = IMAGE_TOPIC,
    info_topic: str = INFO_TOPIC,
    pose_topic: str = POSE_TOPIC,
) -> Iterator[Frame]:
    """The bag's frames in bag order, one per image message.

    K comes from the CameraInfo with the image's stamp, else the latest one before it
    (the contract's rule), as the node pairs them: once images have been finding their own,
    an image without one takes the latest only if the CameraInfos before it hold one K
    (``camera_info.camera_info_for_image``). The ground truth only from a pose with the image's stamp.
    """
    # The small messages first (one pass), so that images can stream in the second one
    # whatever order equal-stamped messages were stored in.
    infos: dict[int, np.ndarray] = {}
    poses: dict[int, np.ndarray] = {}
    for raw in raw_messages(path, [info_topic, pose_topic]):
        msg = _decode(raw)
        if raw.topic == info_topic:
            infos[_stamp_ns(msg.header)] = np.asarray(msg.k, dtype=float).reshape(3, 3)
        else:
            poses[_stamp_ns(msg.header)] = _pose_mm(msg)
    info_stamps = sorted(infos)
    paired = False  # the last image found the CameraInfo with its stamp
    for raw in raw_messages(path, [image_topic]):
        msg = _decode(raw)
        stamp = _stamp_ns(msg.header)
        try:
            image = decode_image(msg.encoding, msg.height, msg.width, msg.step, bool(msg.is_bigendian), msg.data)
        except ImageError as err:
            image = err
        at = bisect.bisect_right(info_stamps, stamp)
        recent = [infos[s] for s in info_stamps[max(0, at - CAMERA_INFO_HISTORY) : at]]
        info, paired = camera_info_for_image(infos.get(stamp), recent, paired, stamp)
        missing = info if isinstance(info, str) else ""
        yield Frame(stamp_ns=stamp, image=image, K=None if missing else info, T_ct_source_gt=poses.get(stamp),
                    encoding=msg.encoding, K_missing=missing)
