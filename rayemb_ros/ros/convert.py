"""ROS messages <-> the core's numpy types. Translation only, no decisions.

The core works in millimetres with 4x4 matrices; ROS messages carry metres and xyzw
quaternions (REP 103). This module is the only place where either conversion happens.
"""

from __future__ import annotations

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import (
    Point, Pose, PoseStamped, PoseWithCovariance, PoseWithCovarianceStamped, Quaternion, Transform, TransformStamped,
    Vector3,
)
from jaxtyping import Float
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from rayemb_ros.geometry.camera import MM_PER_M, pose_from_ros, pose_to_ros
from rayemb_ros.io.images import ImageError, decode_image, encode_image
from rayemb_ros.msg import Landmark, LandmarkArray
from rayemb_ros.evaluation.overlay import INLIER_RGB, OUTLIER_RGB
from rayemb_ros.estimation.result import Estimate, Landmarks
from rayemb_ros.estimation.runner import Health


# RViz sizes (metres) and colours of the markers.
_LANDMARK_DIAMETER_M = 0.004
_SOURCE_DIAMETER_M = 0.03
_FRUSTUM_LINE_M = 0.002
_SOURCE_RGBA = (1.0, 0.85, 0.0, 1.0)
_FRUSTUM_RGBA = (0.0, 0.8, 1.0, 0.8)


# --- images and intrinsics ---


def image_to_array(msg: Image) -> Float[np.ndarray, "H W"]:
    """The grey float32 image of a message; ImageError for anything the contract rejects."""
    return decode_image(msg.encoding, msg.height, msg.width, msg.step, bool(msg.is_bigendian), msg.data)


def array_to_image(image: np.ndarray, encoding: str, header: Header) -> Image:
    """A message holding ``image`` (H x W, or H x W x 3 in the order ``encoding`` names)."""
    data, step = encode_image(image, encoding)
    return Image(
        header=header, height=image.shape[0], width=image.shape[1], encoding=encoding,
        is_bigendian=0, step=step, data=data,
    )


def camera_info_K(msg: CameraInfo) -> Float[np.ndarray, "3 3"]:
    """The intrinsic matrix of a CameraInfo; ImageError when it is not a pinhole camera."""
    K = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
    if not (np.isfinite(K).all() and K[0, 0] > 0 and K[1, 1] > 0 and K[2, 2] == 1.0):
        raise ImageError(f"CameraInfo k is not a camera matrix: {K.ravel().tolist()}")
    return K


def stamp_ns(header: Header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


# --- poses (4x4 mm <-> metres and xyzw quaternions) ---


def matrix_to_pose(T_mm: Float[np.ndarray, "4 4"]) -> Pose:
    (x, y, z), (qx, qy, qz, qw) = pose_to_ros(T_mm)
    return Pose(position=Point(x=float(x), y=float(y), z=float(z)),
                orientation=Quaternion(x=float(qx), y=float(qy), z=float(qz), w=float(qw)))


def pose_to_matrix(pose: Pose) -> Float[np.ndarray, "4 4"]:
    p, q = pose.position, pose.orientation
    return pose_from_ros([p.x, p.y, p.z], [q.x, q.y, q.z, q.w])


def matrix_to_transform(T_mm: Float[np.ndarray, "4 4"]) -> Transform:
    pose = matrix_to_pose(T_mm)
    p = pose.position
    return Transform(translation=Vector3(x=p.x, y=p.y, z=p.z), rotation=pose.orientation)


def transform_to_matrix(transform: Transform) -> Float[np.ndarray, "4 4"]:
    t, q = transform.translation, transform.rotation
    return pose_from_ros([t.x, t.y, t.z], [q.x, q.y, q.z, q.w])


def pose_stamped(T_ct_source: Float[np.ndarray, "4 4"], header: Header) -> PoseStamped:
    return PoseStamped(header=header, pose=matrix_to_pose(T_ct_source))


# The covariance's 6-vector: mm for the position, rad for the rotation -> m and rad; its 6x6
# entries scale by the product of their row's and column's factors.
_VECTOR_TO_ROS = np.array([1 / MM_PER_M] * 3 + [1.0] * 3)
_TO_ROS_UNITS = np.outer(_VECTOR_TO_ROS, _VECTOR_TO_ROS)


def pose_with_covariance(T_ct_source: Float[np.ndarray, "4 4"], covariance_mm_rad: Float[np.ndarray, "6 6"],
                         header: Header) -> PoseWithCovarianceStamped:
    """The pose with its covariance (``geometry.covariance``: x, y, z, rotation about x, y, z of
    the ``ct`` axes), row-major in m and rad."""
    ros = covariance_mm_rad * _TO_ROS_UNITS
    return PoseWithCovarianceStamped(header=header, pose=PoseWithCovariance(
        pose=matrix_to_pose(T_ct_source), covariance=[float(x) for x in ros.ravel()]))


def covariance_from_ros(values) -> Float[np.ndarray, "6 6"]:
    """A PoseWithCovariance's 36 values (m, rad) as the core's 6x6 (mm, rad)."""
    return np.asarray(values, dtype=np.float64).reshape(6, 6) / _TO_ROS_UNITS


def transform_stamped(T_ct_source: Float[np.ndarray, "4 4"], header: Header, child_frame: str) -> TransformStamped:
    """The TF of ``header.frame_id`` (the CT) -> ``child_frame`` (the source): T_ct_source."""
    return TransformStamped(header=header, child_frame_id=child_frame, transform=matrix_to_transform(T_ct_source))


# --- landmarks and markers ---


def landmarks_msg(landmarks: Landmarks, header: Header) -> LandmarkArray:
    return LandmarkArray(
        header=header,
        landmarks=[
            Landmark(
                point=Point(x=float(p[0] / MM_PER_M), y=float(p[1] / MM_PER_M), z=float(p[2] / MM_PER_M)),
                u=float(uv[0]), v=float(uv[1]), score=float(s), inlier=bool(i),
            )
            for p, uv, s, i in zip(landmarks.points_ct, landmarks.uv, landmarks.scores, landmarks.inliers)
        ],
    )


def landmarks_from_msg(msg: LandmarkArray) -> Landmarks:
    """The inverse of ``landmarks_msg`` (points back to mm)."""
    lms = msg.landmarks
    return Landmarks(
        points_ct=np.array([[lm.point.x, lm.point.y, lm.point.z] for lm in lms], dtype=float).reshape(-1, 3)
        * MM_PER_M,
        uv=np.array([[lm.u, lm.v] for lm in lms], dtype=float).reshape(-1, 2),
        scores=np.array([lm.score for lm in lms], dtype=float),
        inliers=np.array([lm.inlier for lm in lms], dtype=bool),
    )


def _points(points_mm: Float[np.ndarray, "N 3"]) -> list[Point]:
    return [Point(x=float(x), y=float(y), z=float(z)) for x, y, z in points_mm / MM_PER_M]


def _rgba(r: float, g: float, b: float, a: float = 1.0) -> ColorRGBA:
    return ColorRGBA(r=float(r), g=float(g), b=float(b), a=float(a))


def _marker(header: Header, ns: str, kind: int, size_m: float, rgba: tuple[float, ...]) -> Marker:
    m = Marker(header=header, ns=ns, id=0, type=kind, action=Marker.ADD, color=_rgba(*rgba))
    m.pose.orientation.w = 1.0
    m.scale.x = m.scale.y = m.scale.z = size_m
    return m


def detector_corners_mm(
    K: Float[np.ndarray, "3 3"], height: int, width: int, sdd_mm: float
) -> Float[np.ndarray, "4 3"]:
    """The image corners on a detector plane ``sdd_mm`` from the source, in the source frame."""
    corners = np.array([[-0.5, -0.5], [width - 0.5, -0.5], [width - 0.5, height - 0.5], [-0.5, height - 0.5]])
    rays = np.concatenate([corners, np.ones((4, 1))], axis=1) @ np.linalg.inv(K).T
    return rays / rays[:, 2:3] * sdd_mm


def markers_msg(
    estimate: Estimate, K: Float[np.ndarray, "3 3"], height: int, width: int, sdd_mm: float, header: Header
) -> MarkerArray:
    """Landmarks in ``header.frame_id`` (the CT), inliers green and outliers red; with a
    trusted pose also the source and its detector frustum, else those are deleted."""
    lm = _marker(header, "landmarks", Marker.SPHERE_LIST, _LANDMARK_DIAMETER_M, (1.0, 1.0, 1.0, 1.0))
    lm.points = _points(estimate.landmarks.points_ct)
    lm.colors = [_rgba(*(np.array(INLIER_RGB if i else OUTLIER_RGB) / 255.0)) for i in estimate.landmarks.inliers]
    source = _marker(header, "source", Marker.SPHERE, _SOURCE_DIAMETER_M, _SOURCE_RGBA)
    frustum = _marker(header, "detector", Marker.LINE_LIST, _FRUSTUM_LINE_M, _FRUSTUM_RGBA)
    if not estimate.ok or estimate.T_ct_source is None:
        source.action = frustum.action = Marker.DELETE
        return MarkerArray(markers=[lm, source, frustum])
    T = estimate.T_ct_source
    source.pose = matrix_to_pose(T)
    corners = detector_corners_mm(K, height, width, sdd_mm) @ T[:3, :3].T + T[:3, 3]
    apex = T[:3, 3]
    # Four edges from the focal spot to the detector corners, then the detector rectangle.
    segments = [p for c in corners for p in (apex, c)] + [p for i in range(4) for p in (corners[i], corners[(i + 1) % 4])]
    frustum.points = _points(np.array(segments))
    return MarkerArray(markers=[lm, source, frustum])


# --- diagnostics ---


def _value(x: object) -> str:
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, float):
        return f"{x:.3f}"
    return str(x)


def diagnostics_msg(health: Health, name: str, header: Header) -> DiagnosticArray:
    volume = health.volume
    values = {
        "volume_loaded": volume is not None,
        "volume": volume.path if volume else "",
        "num_landmarks": volume.num_landmarks if volume else 0,
        "weights": volume.weights if volume else "",  # the encoder weights frames are registered with
        "self_check": volume.self_check if volume else "",  # a prepared bundle's self-check verdict
        "frames_received": health.frames_received,
        "frames_estimated": health.frames_estimated,
        "poses_ok": health.poses_ok,
        "dropped_stale": health.dropped_stale,
        "dropped_no_volume": health.dropped_no_volume,
        "rejected": health.rejected,
        "last_rejection": health.last_rejection,
        "last_latency_ms": health.last_latency_ms,
        "last_estimate_ms": health.last_estimate_ms,
        "last_inliers": health.last_inliers,
        "last_reprojection_error_px": health.last_reprojection_error_px,
        # navigation | advisory (see result.PoseGrade): whether a navigation stack may steer by these poses
        "pose_grade": health.pose_grade.name if health.pose_grade else "unknown",
        "pose_grade_reasons": "; ".join(health.pose_grade.reasons) if health.pose_grade else "",
        # live fluoroscopy (param tracking): how the last frame was registered, from a prior or from scratch
        "last_mode": health.last_mode,
        "last_fallback": health.last_fallback,
        "poses_from_prior": health.poses_from_prior,
        "priors_received": health.priors_received,  # on ~/pose_prior
        "priors_ignored": health.priors_ignored,
    }
    status = DiagnosticStatus(
        level=bytes([int(health.level)]),
        name=name,
        message=health.message,
        hardware_id="carm",
        values=[KeyValue(key=k, value=_value(v)) for k, v in values.items()],
    )
    return DiagnosticArray(header=header, status=[status])


def diagnostics_values(msg: DiagnosticArray, name_prefix: str) -> dict[str, str] | None:
    """The values of the status whose name starts with ``name_prefix`` (a node's name), plus its
    ``message``, as ``diagnostics_msg`` wrote them; None when the message holds no such status."""
    status = next((s for s in msg.status if s.name.startswith(name_prefix)), None)
    return None if status is None else {kv.key: kv.value for kv in status.values} | {"message": status.message}


# Counters of the node's diagnostics that each count one image the node is done with.
HANDLED_COUNTERS = ("frames_estimated", "rejected", "dropped_stale", "dropped_no_volume")


def frames_handled(values: dict[str, str]) -> int:
    """How many images the node is done with (estimated, rejected or dropped), from
    ``diagnostics_values``: it goes up by one as the node's verdict on each image comes out."""
    return sum(int(values[k]) for k in HANDLED_COUNTERS)
