"""The CameraInfo pairing rule shared by the node and the bag reader."""

import numpy as np

from rayemb_ros.io.camera_info import NO_CAMERA_INFO, camera_info_for_image, steady_intrinsics


def test_steady_intrinsics_needs_two_or_more_equal_k():
    K = np.array([[1000.0, 0, 128], [0, 1000.0, 128], [0, 0, 1]])
    zoomed = K * np.array([[1.1], [1.1], [1.0]])
    assert steady_intrinsics([K, K.copy(), K])
    assert not steady_intrinsics([K])  # one CameraInfo cannot show that K stays
    assert not steady_intrinsics([])
    assert not steady_intrinsics([K, zoomed, K])


def test_an_image_takes_its_own_else_the_newest_unless_k_changes():
    K1, K2 = np.diag([1.0, 1.0, 1.0]), np.diag([2.0, 2.0, 1.0])
    assert camera_info_for_image(K1, [K2], paired=False, stamp_ns=5) == (K1, True)  # its own: now paired
    assert camera_info_for_image(None, [], paired=True, stamp_ns=5) == (None, True)  # none at all
    assert camera_info_for_image(None, [K1, K2], paired=False, stamp_ns=5)[0] is K2  # the contract's latest
    assert camera_info_for_image(None, [K2, K2], paired=True, stamp_ns=5)[0] is K2  # a steady camera's K
    why, paired = camera_info_for_image(None, [K1, K2], paired=True, stamp_ns=5)
    assert why.startswith(NO_CAMERA_INFO) and "(5)" in why and paired  # a changing K: refused, still paired
