"""The DeepFluoro loader against a small HDF5 file written in DeepFluoro's own layout and
conventions, with known answers.

The writer below speaks only DeepFluoro's language (Grupp's documentation and scripts): LPS
volumes with ITK origin/spacing/dir-mat and row-major pixels, a projective frame with +Z
towards the source and a negative-focal intrinsic, ``extrinsic`` world -> projective,
``cam-to-pelvis-vol`` world -> pelvis LPS, 2D landmarks = ``intrinsic @ extrinsic @
inv(cam-to-pelvis-vol) @ X`` in the stored (un-rotated) image, and images whose dense
voxels were drawn where xreg's old ray caster put them (voxel i at index i + 0.5), which is
what the -0.5 mm correction undoes. The checks use only the loader's outputs and
``camera.project``.
"""

import h5py
import numpy as np
import pytest

from rayemb_ros.geometry.camera import invert_pose, project
from rayemb_ros.io.deepfluoro import DeepFluoro, DeepFluoroError

ROWS, COLS, PIXEL_MM, SDD = 170, 210, 0.776, 1020.0
F = SDD / PIXEL_MM
CX, CY = 112.3, 79.6  # off-centre on purpose: a turn about the image centre would miss it
INTRINSIC = np.array([[-F, 0.0, CX], [0.0, -F, CY], [0.0, 0.0, 1.0]])
# The Siemens CIOS Fusion extrinsic that xreg ships (xregCIOSFusionDICOM.cpp), world -> projective.
EXTRINSIC = np.array(
    [
        [0.0014173902529073, 0.0000057733016248, 0.9999990957527923, -157.5822163123799555],
        [-0.9999907608500266, -0.0040758357952800, 0.0014174006256202, -2.6757496083693013],
        [0.0040758413782892, -0.9999918324063819, 0.0, -631.7764689585426368],
        [0.0, 0.0, 0.0, 1.0],
    ]
)
SPECIMEN, OTHER = "18-1109", "17-1882"
ORIGIN = np.array([-21.3, 14.6, -931.2])  # LPS mm of voxel (0, 0, 0)
SHAPE_ZYX = (30, 36, 40)  # pixels[k, j, i]
BLOBS_IJK = np.array([[12, 10, 8], [27, 22, 19]])
BORDER = 50
LANDMARKS_LPS = {"FH-l": [-5.0, 30.0, -915.0], "FH-r": [12.0, 25.0, -920.0], "ASIS-l": [-15.0, 40.0, -910.0]}
# (rot-180-for-up, rotation of the pelvis in the projective frame as a rotation vector, depth mm)
VIEWS = [(0, [0.1, -0.2, 0.05], 640.0), (1, [-0.15, 0.25, 2.9], 610.0), (0, [0.3, 0.1, -0.4], 700.0)]
I0 = 60000.0


def rotvec(v):
    v = np.asarray(v, dtype=float)
    theta = np.linalg.norm(v)
    k = v / theta
    Kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(theta) * Kx + (1 - np.cos(theta)) * Kx @ Kx


def deepfluoro_pixel(M, x_lps):
    """DeepFluoro's projection of LPS points through pelvis-vol -> projective ``M``."""
    p = (M @ np.c_[x_lps, np.ones(len(x_lps))].T)[:3]
    uvw = INTRINSIC @ p
    return (uvw[:2] / uvw[2]).T


def pelvis_to_projective(rotation, depth):
    """Rigid LPS -> projective placing the CT centre in front of the source (Z < 0)."""
    centre = ORIGIN + (np.array(SHAPE_ZYX[::-1]) - 1) / 2.0
    M = np.eye(4)
    M[:3, :3] = rotvec(rotation)
    M[:3, 3] = np.array([3.0, -4.0, -depth]) - M[:3, :3] @ centre
    return M


def stored_image(M):
    """Raw detector image (bone dark): Gaussian shadows where the old ray caster drew the blobs,
    plus a faint texture so that any misplaced pixel shows."""
    old_positions = ORIGIN + BLOBS_IJK + 0.5
    uv = deepfluoro_pixel(M, old_positions)
    vv, uu = np.mgrid[0:ROWS, 0:COLS].astype(float)
    line_integral = sum(np.exp(-((uu - u) ** 2 + (vv - v) ** 2) / (2 * 1.5**2)) for u, v in uv)
    texture = 1e-4 * np.random.default_rng(0).random((ROWS, COLS))
    return (I0 * np.exp(-(line_integral + texture))).astype(np.float32)


def write_image_group(group, pixels, origin, spacing, direction):
    group["pixels"] = pixels
    group["origin"] = np.asarray(origin, dtype=float).reshape(3, 1)
    group["spacing"] = np.asarray(spacing, dtype=float).reshape(3, 1)
    group["dir-mat"] = np.asarray(direction, dtype=float)


@pytest.fixture(scope="module")
def h5_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("deepfluoro") / "ipcai_2020_full_res_data.h5"
    truth = []
    with h5py.File(path, "w") as f:
        params = f.create_group("proj-params")
        params["intrinsic"], params["extrinsic"] = INTRINSIC, EXTRINSIC
        params["num-rows"], params["num-cols"] = ROWS, COLS
        params["pixel-row-spacing"], params["pixel-col-spacing"] = PIXEL_MM, PIXEL_MM

        spec = f.create_group(SPECIMEN)
        ct = np.full(SHAPE_ZYX, -1000.0, dtype=np.float32)
        for i, j, k in BLOBS_IJK:
            ct[k, j, i] = 1500.0
        write_image_group(spec.create_group("vol"), ct, ORIGIN, [1, 1, 1], np.eye(3))
        seg = np.zeros(SHAPE_ZYX, dtype=np.uint8)
        seg[:, :, :20], seg[:, :, 20:] = 1, 5  # left hemipelvis | left femur
        write_image_group(spec.create_group("vol-seg/image"), seg, ORIGIN, [1, 1, 1], np.eye(3))
        for name, x in LANDMARKS_LPS.items():
            spec[f"vol-landmarks/{name}"] = np.reshape(x, (3, 1))
        for n, (rot_180, rotation, depth) in enumerate(VIEWS):
            M = pelvis_to_projective(rotation, depth)
            cam_to_pelvis = invert_pose(M) @ EXTRINSIC  # so that extrinsic @ inv(it) = M
            proj = spec.create_group(f"projections/{n:03d}")
            proj["image/pixels"] = stored_image(M)
            proj["gt-poses/cam-to-pelvis-vol"] = cam_to_pelvis
            proj["rot-180-for-up"] = np.uint8(rot_180)
            uv = deepfluoro_pixel(M, np.array(list(LANDMARKS_LPS.values())))
            for name, p in zip(LANDMARKS_LPS, uv):
                proj[f"gt-landmarks/{name}"] = p.reshape(2, 1)
            truth.append(dict(M=M, cam_to_pelvis=cam_to_pelvis, stored=proj["image/pixels"][()]))

        other = f.create_group(OTHER)  # non-trivial ITK geometry, no projections
        direction = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
        pixels = np.arange(5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7)
        write_image_group(other.create_group("vol"), pixels, [10.0, -20.0, 30.0], [0.8, 1.2, 2.0], direction)
        other.create_group("projections")
    return path, truth


@pytest.fixture(scope="module")
def frames(h5_file):
    path, _ = h5_file
    with DeepFluoro(path) as df, DeepFluoro(path, half_voxel_correction=False) as raw:
        return list(df.frames(SPECIMEN)), list(raw.frames(SPECIMEN)), df.landmarks_3d(SPECIMEN)


def test_specimens_in_paper_order_and_landmarks_in_ras(h5_file, frames):
    path, _ = h5_file
    with DeepFluoro(path) as df:
        assert df.specimens == [OTHER, SPECIMEN]  # specimens 1 and 2 of the paper
    for name, x in LANDMARKS_LPS.items():
        np.testing.assert_allclose(frames[2][name], [-x[0], -x[1], x[2]])


def test_volume_affine_maps_itk_indices_to_ras(h5_file):
    path, _ = h5_file
    with DeepFluoro(path) as df:
        vol = df.volume(OTHER)
        pelvis = df.volume(SPECIMEN, pelvis_only=True)
    pixels = np.arange(5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7)
    assert vol.shape == (7, 6, 5)
    direction = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    for i, j, k in [(0, 0, 0), (6, 1, 3), (2, 5, 4)]:
        assert vol.hu[i, j, k] == pixels[k, j, i]
        lps = np.array([10.0, -20.0, 30.0]) + direction @ (np.array([0.8, 1.2, 2.0]) * [i, j, k])
        np.testing.assert_allclose(vol.voxels_to_ct(np.array([[i, j, k]], float))[0], lps * [-1, -1, 1])
    # pelvis_only keeps label 1 (a hemipelvis) and airs label 5 (a femur).
    assert pelvis.hu[BLOBS_IJK[0][0], BLOBS_IJK[0][1], BLOBS_IJK[0][2]] == 1500.0
    assert pelvis.hu[BLOBS_IJK[1][0], BLOBS_IJK[1][1], BLOBS_IJK[1][2]] == -1000.0


def test_poses_are_rigid_and_in_the_contract_frames(h5_file, frames):
    _, truth = h5_file
    corrected, _, landmarks = frames
    for frame, t in zip(corrected, truth):
        T, K = frame.T_ct_source, frame.K
        np.testing.assert_allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-9)
        assert np.linalg.det(T[:3, :3]) > 0 and K[0, 0] > 0 and K[1, 1] > 0
        # The source is the projective frame's origin: world inv(extrinsic) 0, then the pelvis pose
        # (to 1 um: the loader makes the 7-digit extrinsic exactly orthonormal).
        source_lps = (t["cam_to_pelvis"] @ np.linalg.inv(EXTRINSIC))[:3, 3] - 0.5
        np.testing.assert_allclose(T[:3, 3], source_lps * [-1, -1, 1], atol=1e-3)
        # +z runs from the source into the patient (towards the detector): landmarks have depth > 0.
        X = np.array(list(landmarks.values()))
        assert ((X - T[:3, 3]) @ T[:3, 2] > 500).all()


def test_projection_lands_on_stored_landmarks_without_correction(frames):
    _, raw, landmarks = frames
    names = list(landmarks)
    X = np.array([landmarks[n] for n in names])
    for frame in raw:
        uv = np.array([frame.landmarks_2d[n] for n in names])
        np.testing.assert_allclose(project(frame.K, frame.T_ct_source, X), uv, atol=1e-3)


def test_corrected_pose_differs_from_landmarks_by_the_half_voxel_shift(frames):
    corrected, _, landmarks = frames
    names = list(landmarks)
    X = np.array([landmarks[n] for n in names])
    shift_ras = np.array([0.5, 0.5, -0.5])  # LPS (-0.5, -0.5, -0.5) undone, in RAS
    for frame in corrected:
        uv = np.array([frame.landmarks_2d[n] for n in names])
        np.testing.assert_allclose(project(frame.K, frame.T_ct_source, X + shift_ras), uv, atol=1e-3)
        assert np.abs(project(frame.K, frame.T_ct_source, X) - uv).max() > 0.3


def test_corrected_pose_projects_ct_voxels_onto_their_shadows(h5_file, frames):
    """Blob voxel centres (our Volume's affine) projected with T_ct_source hit the blobs' bright
    spots in the loaded image: the correction's direction, the mirror, crop and turn at once."""
    path, _ = h5_file
    with DeepFluoro(path) as df:
        centres = df.volume(SPECIMEN).voxels_to_ct(BLOBS_IJK.astype(float))
    for frame in frames[0]:
        for u, v in project(frame.K, frame.T_ct_source, centres):
            r, c = int(round(v)), int(round(u))
            window = frame.image[r - 6 : r + 7, c - 6 : c + 7].astype(float)
            rr, cc = np.mgrid[r - 6 : r + 7, c - 6 : c + 7]
            assert window.max() > 0.9  # bright = dense
            assert abs((window * cc).sum() / window.sum() - u) < 0.03
            assert abs((window * rr).sum() / window.sum() - v) < 0.03


def test_images_are_cropped_mirrored_turned_and_log_transformed(h5_file, frames):
    _, truth = h5_file
    h, w = ROWS - 2 * BORDER, COLS - 2 * BORDER
    vv, uu = np.mgrid[0:h, 0:w]
    for frame, (rot_180, _, _), t in zip(frames[0], VIEWS, truth):
        assert frame.image.shape == (h, w) and frame.image.dtype == np.float32
        assert frame.rot_180_for_up == bool(rot_180)
        crop = t["stored"][BORDER:-BORDER, BORDER:-BORDER].astype(float)
        attenuation = np.log(crop.max()) - np.log(crop)
        # Where each output pixel comes from: columns reversed (our handedness), then for a
        # flagged frame a 180-degree turn; together that reverses rows only.
        src_u, src_v = (uu, h - 1 - vv) if rot_180 else (w - 1 - uu, vv)
        np.testing.assert_allclose(frame.image, attenuation[src_v, src_u], atol=1e-5)


def test_not_deepfluoro_is_refused(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["x"] = 1
    with pytest.raises(DeepFluoroError, match="proj-params"):
        DeepFluoro(path)
    with pytest.raises(DeepFluoroError, match="cannot open"):
        DeepFluoro(tmp_path / "missing.h5")
