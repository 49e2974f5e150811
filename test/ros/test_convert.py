"""ROS message conversions: poses in metres with xyzw quaternions, landmarks, markers, diagnostics."""

import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import Header
from visualization_msgs.msg import Marker

from rayemb_ros.geometry.camera import Detector, project
from rayemb_ros.io.images import ImageError
from rayemb_ros.estimation.result import Estimate, Landmarks, PoseGrade, VolumeInfo
from rayemb_ros.ros import convert
from rayemb_ros.estimation.runner import Health, Level


def random_pose(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    T = np.eye(4)
    T[:3, :3] = Rotation.random(random_state=seed).as_matrix()
    T[:3, 3] = rng.uniform(-900, 900, 3)
    return T


@pytest.mark.parametrize("seed", range(5))
def test_pose_and_transform_round_trip(seed):
    T = random_pose(seed)
    header = Header(frame_id="ct")
    msg = convert.pose_stamped(T, header)
    assert msg.header.frame_id == "ct"
    np.testing.assert_allclose(convert.pose_to_matrix(msg.pose), T, atol=1e-9)
    tf = convert.transform_stamped(T, header, "carm_source")
    assert (tf.header.frame_id, tf.child_frame_id) == ("ct", "carm_source")
    np.testing.assert_allclose(convert.transform_to_matrix(tf.transform), T, atol=1e-9)


def test_pose_with_covariance_in_metres_and_radians():
    T = random_pose(3)
    covariance = np.diag([4.0, 9.0, 100.0, 1e-6, 4e-6, 9e-6])  # mm^2, rad^2
    covariance[0, 3] = covariance[3, 0] = 2e-3  # mm rad
    msg = convert.pose_with_covariance(T, covariance, Header(frame_id="ct"))
    assert msg.header.frame_id == "ct"
    np.testing.assert_allclose(convert.pose_to_matrix(msg.pose.pose), T, atol=1e-9)
    ros = np.array(msg.pose.covariance).reshape(6, 6)
    assert ros[0, 0] == pytest.approx(4e-6) and ros[2, 2] == pytest.approx(1e-4)  # m^2
    assert ros[4, 4] == pytest.approx(4e-6) and ros[0, 3] == pytest.approx(2e-6)  # rad^2, m rad
    np.testing.assert_allclose(convert.covariance_from_ros(msg.pose.covariance), covariance, rtol=1e-12)


def test_metres_and_xyzw_order():
    T = np.eye(4)
    T[:3, :3] = [[0, -1, 0], [1, 0, 0], [0, 0, 1]]  # +90 deg about z
    T[:3, 3] = [1000.0, -250.0, 30.0]
    pose = convert.matrix_to_pose(T)
    assert (pose.position.x, pose.position.y, pose.position.z) == pytest.approx((1.0, -0.25, 0.03))
    s = math.sqrt(0.5)
    q = pose.orientation
    assert (q.x, q.y, q.z, q.w) == pytest.approx((0.0, 0.0, s, s))
    t = convert.matrix_to_transform(T)
    assert (t.translation.x, t.rotation.z, t.rotation.w) == pytest.approx((1.0, s, s))


def test_camera_info_K():
    K = Detector(sdd=1020, height=300, width=400, delx=0.5, dely=0.5, x0=3.0).K
    info = CameraInfo(k=K.ravel().tolist(), height=300, width=400)
    np.testing.assert_array_equal(convert.camera_info_K(info), K)
    with pytest.raises(ImageError, match="not a camera matrix"):
        convert.camera_info_K(CameraInfo())  # all zeros: what an unset CameraInfo holds


def estimate(ok: bool) -> Estimate:
    points = np.array([[10.0, 20.0, 30.0], [-5.0, 0.0, 1000.0], [0.0, 0.0, 0.0]])
    landmarks = Landmarks(points, np.array([[1.0, 2.0], [3.5, 4.5], [5.0, 6.0]]),
                          np.array([0.9, 0.5, 0.1]), np.array([True, False, True]))
    T = random_pose(7)
    if ok:
        return Estimate(True, "", T, T, landmarks, 2, 0.8, 12.0)
    return Estimate.refused("too few inliers", landmarks)


def test_landmarks_in_metres_with_pixels_scores_and_inliers():
    msg = convert.landmarks_msg(estimate(True).landmarks, Header(frame_id="camera"))
    assert msg.header.frame_id == "camera"
    first, second = msg.landmarks[:2]
    assert (first.point.x, first.point.y, first.point.z) == pytest.approx((0.01, 0.02, 0.03))
    assert second.point.z == pytest.approx(1.0)
    assert (second.u, second.v, second.score) == pytest.approx((3.5, 4.5, 0.5))
    assert [lm.inlier for lm in msg.landmarks] == [True, False, True]
    back = convert.landmarks_from_msg(msg)
    original = estimate(True).landmarks
    np.testing.assert_allclose(back.points_ct, original.points_ct)
    np.testing.assert_allclose(back.uv, original.uv)
    np.testing.assert_allclose(back.scores, original.scores, rtol=1e-6)  # float32 on the wire
    assert back.inliers.tolist() == original.inliers.tolist()


def test_markers_colour_inliers_and_draw_the_frustum():
    est = estimate(True)
    K = Detector(sdd=1020, height=300, width=400, delx=0.5, dely=0.5, y0=-4.0).K
    markers = {m.ns: m for m in convert.markers_msg(est, K, 300, 400, 1020.0, Header(frame_id="ct")).markers}
    lm = markers["landmarks"]
    assert lm.header.frame_id == "ct" and lm.type == Marker.SPHERE_LIST
    assert lm.points[1].z == pytest.approx(1.0)
    assert [(c.r, c.g) for c in lm.colors] == [(0.0, 1.0), (1.0, 0.0), (0.0, 1.0)]
    source = markers["source"]
    assert source.action == Marker.ADD
    assert source.pose.position.x == pytest.approx(est.T_ct_source[0, 3] / 1000)
    lines = np.array([[p.x, p.y, p.z] for p in markers["detector"].points]) * 1000
    assert len(lines) == 16  # 4 rays from the source + 4 detector edges
    np.testing.assert_allclose(lines[0], est.T_ct_source[:3, 3])
    corners = lines[1:8:2]
    np.testing.assert_allclose(project(K, est.T_ct_source, corners),
                               [[-0.5, -0.5], [399.5, -0.5], [399.5, 299.5], [-0.5, 299.5]], atol=1e-6)


def test_markers_without_a_pose_delete_the_frustum():
    markers = {m.ns: m for m in convert.markers_msg(estimate(False), np.eye(3), 10, 10, 1000.0, Header()).markers}
    assert len(markers["landmarks"].points) == 3
    assert markers["source"].action == markers["detector"].action == Marker.DELETE


def test_diagnostics():
    volume = VolumeInfo("example", 400, 3.2, (512, 512, 133), (0.7, 0.7, 2.5))
    health = Health(level=Level.OK, message="pose ok", volume=volume, rejected=2, last_latency_ms=81.25)
    msg = convert.diagnostics_msg(health, "rayemb_node: registration", Header())
    (status,) = msg.status
    assert status.level == b"\x00" and status.message == "pose ok"
    values = {kv.key: kv.value for kv in status.values}
    assert values["volume_loaded"] == "true" and values["num_landmarks"] == "400"
    assert values["rejected"] == "2" and values["last_latency_ms"] == "81.250"
    empty = {kv.key: kv.value for kv in convert.diagnostics_msg(Health(), "n", Header()).status[0].values}
    assert empty["volume_loaded"] == "false" and empty["pose_grade"] == "unknown"
    graded = Health(pose_grade=PoseGrade(("refinement off", "refine_steps 4 < 18")))
    graded = {kv.key: kv.value for kv in convert.diagnostics_msg(graded, "n", Header()).status[0].values}
    assert (graded["pose_grade"], graded["pose_grade_reasons"]) == ("advisory", "refinement off; refine_steps 4 < 18")
