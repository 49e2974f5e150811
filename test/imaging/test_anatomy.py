"""New patients from the bundled CT: points carried through a variant's map land where the
variant's rendered DRR shows them (beads, as the camera test does), the map inverts, the
seed decides everything, and the recipe's changes are in the image."""

import numpy as np
import pytest

from beads import bead_centres
from rayemb_ros.geometry.camera import Detector, project
from rayemb_ros.geometry.poses import carm_pose
from rayemb_ros.imaging.anatomy import METAL_HU, make_variant
from rayemb_ros.imaging.render import NanoRenderer

DETECTOR = Detector(1000, 160, 160, 1.6, 1.6, 6.0, -4.0)


@pytest.fixture(scope="module")
def variants(beads, example_volume):
    """The same variant (seed 7) of the CT with beads and without, and the plain variant's map."""
    volume, X = beads
    return make_variant(volume, 7), make_variant(example_volume, 7), X


@pytest.mark.parametrize("lao, cran", [(10, -5), (-20, 12)])
def test_carried_beads_land_where_the_variant_shows_them(variants, lao, cran):
    with_beads, plain, X = variants
    Y = plain.carry(X)
    # the variant is not the source: the beads moved by centimetres in ct
    assert np.linalg.norm(Y - X, axis=1).min() > 5.0
    T = carm_pose(plain.volume.center, lao, cran, 0.0, 800.0)[None]
    diff = NanoRenderer(with_beads.volume).render_np(T, DETECTOR)[0] - NanoRenderer(plain.volume).render_np(T, DETECTOR)[0]
    uv = project(DETECTOR.K, T[0], Y)
    inside = (uv.min(1) > 5) & (uv.max(1) < DETECTOR.width - 6)
    assert inside.sum() >= 3
    err = np.linalg.norm(bead_centres(diff, uv[inside]) - uv[inside], axis=1)
    assert err.max() < 0.35, f"bead errors (px): {np.round(err, 3)}"


def test_the_map_inverts_and_the_seed_decides(variants, example_volume):
    _, plain, X = variants
    np.testing.assert_allclose(plain.to_source(plain.carry(X)), X, atol=1e-6)
    again = make_variant(example_volume, 7)
    np.testing.assert_array_equal(again.volume.hu, plain.volume.hu)
    np.testing.assert_array_equal(again.volume.affine, plain.volume.affine)
    other = make_variant(example_volume, 8)
    assert other.recipe != plain.recipe and not np.allclose(other.carry(X), plain.carry(X))


def test_recipe_changes_reach_the_image(variants, example_volume):
    _, plain, _ = variants
    r = plain.recipe
    assert plain.volume.shape[2] == example_volume.shape[2] - sum(r.crop_slices)  # truncated field of view
    assert not np.allclose(plain.volume.affine[:3, 3], example_volume.affine[:3, 3])  # origin moved
    metal = make_variant(example_volume, 7, metal=True)
    changed = metal.volume.hu != plain.volume.hu  # the same patient, with screws and plates added
    assert changed.sum() > 50 and (metal.volume.hu[changed] == METAL_HU).all()


def test_a_mirrored_variant_carries_points_through_the_mirror(example_volume):
    """Mirroring (for evaluation only) composes with the variant's map."""
    mirrored = make_variant(example_volume, 7, mirror=True)
    plain = make_variant(example_volume, 7)
    X = example_volume.voxels_to_ct(np.array([[100.0, 250.0, 60.0]]))
    np.testing.assert_allclose(mirrored.carry(X), plain.carry(example_volume.mirror_points(X)), atol=1e-9)
    ijk = np.round(mirrored.volume.ct_to_voxels(mirrored.carry(X))[0]).astype(int)
    source_ijk = np.round(example_volume.ct_to_voxels(X)[0]).astype(int)
    # the same tissue, to within the variant's density change and interpolation
    assert abs(mirrored.volume.hu[tuple(ijk)] - example_volume.hu[tuple(source_ijk)]) < 400
