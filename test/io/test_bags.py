"""rosbag2 round trips: what write_bag stores, read_bag gives back (mcap and sqlite3)."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from rayemb_ros.geometry import camera
from rayemb_ros.io import bags
from rayemb_ros.geometry.camera import Detector
from rayemb_ros.io.images import ENCODINGS, ImageError, to_encoding_range

H, W = 24, 32


def make_frames(encodings: list[str], with_pose: bool = True) -> list[bags.Frame]:
    rng = np.random.default_rng(0)
    frames = []
    for i, encoding in enumerate(encodings):
        T = np.eye(4)
        T[:3, :3] = Rotation.from_rotvec(rng.normal(size=3)).as_matrix()
        T[:3, 3] = rng.uniform(-900, 900, size=3)
        K = Detector(sdd=1000.0 + i, height=H, width=W, delx=2.0, dely=2.5, x0=3.0 * i, y0=-1.0).K
        frames.append(
            bags.Frame(
                stamp_ns=1_700_000_000_123_456_789 + i * 33_000_000,
                image=rng.uniform(-3.0, 7.0, size=(H, W)).astype(np.float32),
                K=K,
                T_ct_source_gt=T if with_pose else None,
                encoding=encoding,
            )
        )
    return frames


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_round_trip_every_encoding(tmp_path, storage):
    frames = make_frames(list(ENCODINGS))
    assert bags.write_bag(tmp_path / "bag", frames, storage=storage) == len(frames)
    back = list(bags.read_bag(tmp_path / "bag"))
    assert len(back) == len(frames)
    for sent, got in zip(frames, back):
        assert got.stamp_ns == sent.stamp_ns and got.encoding == sent.encoding
        expected = to_encoding_range(sent.image, sent.encoding).astype(np.float32)
        if ENCODINGS[sent.encoding][1] == 3:  # grey written to all channels: luma weights sum to 1
            np.testing.assert_allclose(got.image, expected, atol=1e-3)
        else:
            np.testing.assert_array_equal(got.image, expected)
        np.testing.assert_array_equal(got.K, sent.K)
        np.testing.assert_allclose(got.T_ct_source_gt, sent.T_ct_source_gt, atol=1e-9)


def test_messages_follow_the_contract(tmp_path):
    frame = make_frames(["mono16"])[0]
    bags.write_bag(tmp_path / "bag", [frame])
    raws = list(bags.raw_messages(tmp_path / "bag"))
    assert [r.topic for r in raws] == [bags.INFO_TOPIC, bags.POSE_TOPIC, bags.IMAGE_TOPIC]
    assert all(r.log_time_ns == frame.stamp_ns for r in raws)
    info, pose, image = (bags.typestore().deserialize_cdr(r.data, r.msgtype) for r in raws)
    assert info.header.frame_id == image.header.frame_id == "carm_source"
    assert (info.width, info.height, info.distortion_model, len(info.d)) == (W, H, "plumb_bob", 0)
    np.testing.assert_array_equal(info.p.reshape(3, 4), np.hstack([frame.K, np.zeros((3, 1))]))
    assert pose.header.frame_id == "ct"
    position = np.array([pose.pose.position.x, pose.pose.position.y, pose.pose.position.z])
    np.testing.assert_allclose(position, frame.T_ct_source_gt[:3, 3] / 1000.0)  # metres on the wire
    q = pose.pose.orientation
    assert np.isclose(np.linalg.norm([q.x, q.y, q.z, q.w]), 1.0)
    assert image.header.stamp.sec == frame.stamp_ns // 10**9 and image.header.stamp.nanosec == frame.stamp_ns % 10**9
    assert image.is_bigendian == 0 and image.step == 2 * W


def test_custom_topics_and_no_pose(tmp_path):
    frames = make_frames(["mono8", "32FC1"], with_pose=False)
    topics = dict(image_topic="/c/img", info_topic="/c/info", pose_topic="/c/gt")
    bags.write_bag(tmp_path / "bag", frames, storage="sqlite3", **topics)
    assert {r.topic for r in bags.raw_messages(tmp_path / "bag")} == {"/c/img", "/c/info"}
    back = list(bags.read_bag(tmp_path / "bag", **topics))
    assert [f.stamp_ns for f in back] == [f.stamp_ns for f in frames]
    assert all(f.T_ct_source_gt is None for f in back)
    np.testing.assert_array_equal(back[1].K, frames[1].K)
    # The default topic names find no images in this bag.
    assert list(bags.read_bag(tmp_path / "bag")) == []


def without_camera_info(tmp_path, frames: list[bags.Frame], dropped: int):
    """The frames read back from a bag that lacks the CameraInfo of frame ``dropped``."""
    from rosbags.rosbag2 import Reader, Writer

    bags.write_bag(tmp_path / "full", frames)
    with Reader(tmp_path / "full") as reader, Writer(tmp_path / "cut", version=9, storage_plugin=bags.STORAGES["mcap"]) as writer:
        conns = {c.id: writer.add_connection(c.topic, c.msgtype, typestore=bags.typestore()) for c in reader.connections}
        for conn, t, data in reader.messages():
            if not (conn.topic == bags.INFO_TOPIC and t == frames[dropped].stamp_ns):
                writer.write(conns[conn.id], t, data)
    return list(bags.read_bag(tmp_path / "cut"))


def test_latest_camera_info_of_a_steady_camera_and_bad_images(tmp_path):
    """An image without a same-stamp CameraInfo takes the latest earlier one when the camera's
    K has not changed; a bad image comes back as its ImageError, not as an exception that
    ends the bag."""
    frames = make_frames(["mono16", "mono16", "mono16"])
    for f in frames:
        f.K = frames[0].K
    frames[2].image = np.full((H, W), 5.0, dtype=np.float32)  # constant: rejected on decode
    first, _, third = without_camera_info(tmp_path, frames, dropped=2)
    np.testing.assert_array_equal(third.K, frames[0].K)
    assert isinstance(third.image, ImageError) and "constant" in str(third.image)
    assert isinstance(first.image, np.ndarray)


def test_no_camera_info_of_its_own_when_k_changes(tmp_path):
    """CameraInfos one per image, each with its own K: an image whose CameraInfo is missing is
    not given the previous image's (a wrong pose that looks right), as the node refuses it
    (one earlier CameraInfo cannot show that K is steady); the next image pairs with its own."""
    frames = make_frames(["mono16", "mono16", "mono16"])
    first, second, third = without_camera_info(tmp_path, frames, dropped=1)
    assert second.K is None and "another image's K" in second.K_missing
    np.testing.assert_array_equal(third.K, frames[2].K)
    np.testing.assert_array_equal(first.K, frames[0].K)
    assert first.K_missing == third.K_missing == ""


def test_refuses_to_overwrite(tmp_path):
    (tmp_path / "bag").mkdir()
    with pytest.raises(FileExistsError):
        bags.write_bag(tmp_path / "bag", make_frames(["mono16"]))


def test_pose_conversion_is_mm_to_m_and_back():
    T = np.eye(4)
    T[:3, :3] = Rotation.from_euler("zyx", [30, -20, 100], degrees=True).as_matrix()
    T[:3, 3] = [120.0, -450.5, 800.0]
    position, q = camera.pose_to_ros(T)
    np.testing.assert_allclose(position, [0.12, -0.4505, 0.8])
    np.testing.assert_allclose(camera.pose_from_ros(position, q), T, atol=1e-12)
