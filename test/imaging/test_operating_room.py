"""Frames as the operating room makes them: instruments' exact chords, the intensifier's
distortion and its dewarp model, display processing, and that each effect is off by default
and changes no ground truth when on."""

import numpy as np
import pytest

from rayemb_ros.geometry.camera import Detector, project
from rayemb_ros.geometry.poses import carm_pose
from rayemb_ros.imaging.operating_room import (
    DISTORTION_LEVELS, STEEL_PER_MM, Display, Distortion, Rod, bone_anchors, instrument_depth, sample_instruments,
)
from rayemb_ros.imaging.simulate import OperatingRoom, plan, simulate_frames

DETECTOR = Detector(1000.0, 120, 160, 1.5, 1.5, 3.0, -2.0)


def test_a_rod_across_the_beam_adds_its_exact_chord():
    T = carm_pose(np.zeros(3), 10.0, -5.0, 0.0, 800.0)
    x_axis = T[:3, :3] @ np.array([1.0, 0.0, 0.0])  # across the image's columns, 800 mm from the source
    start, end = -40 * x_axis, 40 * x_axis
    rod = Rod(tuple(start), tuple(end), 2.0, STEEL_PER_MM)
    depth = instrument_depth([rod], T, DETECTOR)
    # on the axis' projection the ray crosses the diameter (nearly square to the rod): 4 mm of steel
    u, v = project(DETECTOR.K, T, np.zeros((1, 3)))[0]
    column = depth[:, int(round(u))]
    assert column.max() == pytest.approx(4.0 * STEEL_PER_MM, rel=0.02)
    # nothing beyond the ends, and the rod's shadow spans its projected length
    ends = project(DETECTOR.K, T, np.stack([start, end]))
    lit = np.flatnonzero(depth[int(round(v))] > 0)
    assert lit.min() == pytest.approx(ends[:, 0].min(), abs=1.0) and lit.max() == pytest.approx(ends[:, 0].max(), abs=1.0)
    assert depth[0].max() == 0.0


def test_distortion_inverts_and_its_dewarp_model_restores_the_frame(tmp_path):
    h, w = 256, 256
    rng = np.random.default_rng(0)
    ideal = cv_smooth(rng.random((h, w)).astype(np.float32))
    for name, edge_px in (("mild", (2.5, 3.5)), ("strong", (8.5, 10.0))):
        d = Distortion.level(name)
        du, dv = d.distort(np.array([w - 0.5]), np.array([(h - 1) / 2]), h, w)  # the edge, 128 px out
        shift = np.hypot(du - (w - 0.5), dv - (h - 1) / 2)[0]
        assert edge_px[0] < shift < edge_px[1], (name, shift)
        uu, vv = np.meshgrid(np.arange(w, dtype=float), np.arange(h, dtype=float))
        iu, iv = d.undistort(*d.distort(uu, vv, h, w), h, w)
        assert np.abs(iu - uu).max() < 1e-6 and np.abs(iv - vv).max() < 1e-6
        model = np.load(d.save(tmp_path / f"{name}.npz", h, w))
        import cv2
        restored = cv2.remap(d.apply(ideal), model["map_u"], model["map_v"], cv2.INTER_LINEAR)
        inner = (slice(40, -40), slice(40, -40))
        error = np.abs(restored[inner] - ideal[inner]).max()
        assert error < 0.05 and error < 0.25 * np.abs(d.apply(ideal)[inner] - ideal[inner]).max()


def cv_smooth(x):
    import cv2
    return cv2.GaussianBlur(x, (0, 0), 4.0) * 4


def test_inverted_display_turns_bone_dark_inside_the_field():
    image = np.zeros((64, 64), np.float32)
    image[16:48, 16:48] = np.linspace(0.2, 1.0, 32)[None]
    upright = Display(6.0, 1.0, 2.0, False).apply(image)
    inverted = Display(6.0, 1.0, 2.0, True).apply(image)
    field = image > 0
    np.testing.assert_allclose(inverted[field], 1 - upright[field], atol=1e-6)
    assert (inverted[~field] == 0).all()


@pytest.mark.slow
def test_each_effect_is_off_by_default_and_changes_no_ground_truth(example_volume):
    shots = plan(example_volume, 2, 7, 96, 96)
    plain = list(simulate_frames(example_volume, shots, 7, renderer="nanodrr"))
    again = list(simulate_frames(example_volume, shots, 7, renderer="nanodrr", operating_room=OperatingRoom()))
    room = OperatingRoom(instruments=3, low_dose=True, display="vendor", distortion="strong")
    busy = list(simulate_frames(example_volume, shots, 7, renderer="nanodrr", operating_room=room))
    for a, b, c in zip(plain, again, busy):
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.T_ct_source_gt, c.T_ct_source_gt)
        np.testing.assert_array_equal(a.K, c.K)
        assert not np.array_equal(a.image, c.image)
    rods = sample_instruments(np.random.default_rng(1), bone_anchors(example_volume), 6)
    assert len(rods) >= 6 and all(r.radius_mm > 0 and r.per_mm > 0 for r in rods)
    assert set(DISTORTION_LEVELS) == {"mild", "strong"}


def test_the_estimator_sees_frames_dewarped_and_a_model_of_another_size_is_refused(tmp_path):
    from rayemb_ros.imaging.intensity import estimator_image
    from rayemb_ros.io.images import ImageError

    rng = np.random.default_rng(1)
    ideal = cv_smooth(rng.random((128, 160)).astype(np.float32)) + 1.0
    d = Distortion.level("strong")
    model = str(d.save(tmp_path / "dewarp.npz", 128, 160))
    seen = estimator_image(d.apply(ideal), "attenuation", model)
    inner = (slice(30, -30), slice(30, -30))
    assert np.abs(seen[inner] - ideal[inner]).max() < 0.05
    with pytest.raises(ImageError, match="dewarp model"):
        estimator_image(np.ones((64, 64), np.float32) + np.eye(64, dtype=np.float32), "attenuation", model)
