"""The camera model against rendered beads in the real bundled CT, and its round trips."""

import numpy as np
import pytest

from rayemb_ros.geometry.camera import (
    Detector,
    backproject,
    invert_pose,
    pose_from_diffdrr,
    pose_to_diffdrr,
    project,
    resize_image,
)
from rayemb_ros.geometry.poses import carm_pose
from rayemb_ros.imaging.render import DiffdrrRenderer, NanoRenderer
from beads import bead_centres

CASES = [  # (detector, lao, cran, roll, sid, isocentre shift)
    (Detector(1000, 96, 128, 280 / 128, 280 / 128, 12.0, -7.0), 17, -12, 6, 800, (5, -10, 8)),
    (Detector(1150, 144, 120, 2.5, 2.5, -9.0, 15.0), -25, 15, -8, 720, (-20, 10, 0)),
    (Detector(950, 192, 160, 1.2, 1.4, 0.0, 0.0), -5, 8, 0, 880, (0, 0, -15)),
]


@pytest.mark.parametrize("renderer", ["diffdrr", "nanodrr"])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_bead_projection_within_quarter_pixel(beads, example_volume, renderer, case):
    volume, X = beads
    det, lao, cran, roll, sid, shift = CASES[case]
    T = carm_pose(example_volume.center + np.array(shift, float), lao, cran, roll, sid)[None]
    if renderer == "diffdrr":
        exact = dict(renderer="siddon", resample_mm=None)
        diff = DiffdrrRenderer(volume, **exact).render_np(T, det)[0] - DiffdrrRenderer(example_volume, **exact).render_np(T, det)[0]
    else:
        diff = NanoRenderer(volume).render_np(T, det)[0] - NanoRenderer(example_volume).render_np(T, det)[0]
    uv = project(det.K, T[0], X)
    inside = (uv.min(1) > 5) & (uv[:, 0] < det.width - 6) & (uv[:, 1] < det.height - 6)
    assert inside.sum() >= 3
    uv = uv[inside]
    err = np.linalg.norm(bead_centres(diff, uv) - uv, axis=1)
    assert err.max() < 0.25, f"bead errors (px): {np.round(err, 3)}"


def test_project_backproject_round_trip():
    det = Detector(1020, 200, 300, 0.9, 0.8, 7.0, -3.0)
    T = carm_pose(np.array([10.0, 20.0, -30.0]), 20, -10, 5, 800)
    rng = np.random.default_rng(0)
    X = rng.uniform(-80, 80, (50, 3)) + np.array([10.0, 20.0, -30.0])
    uv = project(det.K, T, X)
    origin, dirs = backproject(det.K, T, uv)
    # every point lies on its pixel's ray
    rel = X - origin
    along = (rel * dirs).sum(1, keepdims=True)
    assert np.abs(rel - along * dirs).max() < 1e-6
    np.testing.assert_allclose(origin, T[:3, 3])


def test_invert_pose_and_diffdrr_round_trip():
    T = carm_pose(np.zeros(3), 12, 7, -3, 750)
    np.testing.assert_allclose(invert_pose(T) @ T, np.eye(4), atol=1e-12)
    reorient = np.array([[1, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1.0]])
    np.testing.assert_allclose(pose_from_diffdrr(pose_to_diffdrr(T, reorient), reorient), T, atol=1e-12)


def test_detector_K_round_trip_and_resize():
    det = Detector(1020, 240, 320, 0.8, 0.8, 6.0, -4.0)
    back = Detector.from_K(det.K, det.height, det.width, det.sdd)
    for a, b in zip(back.__dict__.values(), det.__dict__.values()):
        assert a == pytest.approx(b)
    # A resized image and its K still agree on where points land.
    T = carm_pose(np.zeros(3), 5, 5, 0, 800)
    X = np.random.default_rng(1).uniform(-50, 50, (20, 3))
    img = np.zeros((240, 320), np.float32)
    small, K2 = resize_image(img, det.K, 120, 160)
    assert small.shape == (120, 160)
    np.testing.assert_allclose(K2, det.resized(120, 160).K, atol=1e-9)
    np.testing.assert_allclose((project(det.K, T, X) + 0.5) / 2 - 0.5, project(K2, T, X), atol=1e-9)
