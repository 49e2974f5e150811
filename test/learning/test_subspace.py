"""The subspace maths on known cases, and PnP on exact correspondences."""

import numpy as np
import torch

from rayemb_ros.learning import subspace
from rayemb_ros.geometry.camera import Detector, project
from rayemb_ros.geometry.pnp import solve_pnp
from rayemb_ros.geometry.poses import carm_pose
from rayemb_ros.learning.subspace import (
    coarse_to_fine_peaks,
    sample_embeddings,
    similarity,
    soft_target,
    subpixel_peaks,
    subspace_basis,
    window_peaks,
)


def test_similarity_is_one_inside_the_span_and_zero_orthogonal():
    torch.manual_seed(0)
    d, t = 32, 4
    templates = torch.randn(1, 1, t, d)  # B P T D
    basis = subspace_basis(templates)
    assert torch.allclose(basis[0, 0].T @ basis[0, 0], torch.eye(t), atol=1e-5)
    inside = (torch.randn(t) @ templates[0, 0])  # a combination of the templates
    outside = torch.randn(d)
    outside = outside - basis[0, 0] @ (basis[0, 0].T @ outside)  # orthogonal to the span
    emb = torch.stack([inside, outside, inside * -3.0], dim=1).reshape(1, d, 1, 3)
    sim = similarity(basis, emb)[0, 0, 0]
    assert abs(float(sim[0]) - 1) < 1e-5
    assert abs(float(sim[1])) < 1e-5
    assert abs(float(sim[2]) - 1) < 1e-5  # scale and sign do not matter


def test_sample_embeddings_reads_pixel_centres_at_integers():
    emb = torch.arange(2 * 4 * 5, dtype=torch.float32).reshape(1, 2, 4, 5)
    uv = torch.tensor([[[3.0, 2.0], [0.0, 0.0], [1.5, 1.0]]])
    got = sample_embeddings(emb, uv)[0]
    assert torch.allclose(got[0], emb[0, :, 2, 3])
    assert torch.allclose(got[1], emb[0, :, 0, 0])
    assert torch.allclose(got[2], (emb[0, :, 1, 1] + emb[0, :, 1, 2]) / 2)


def test_subpixel_peak_and_soft_target_agree():
    h, w = 20, 30
    uv = torch.tensor([[[12.3, 7.6]]])
    target = soft_target(uv, torch.ones(1, 1, dtype=torch.bool), h, w).reshape(1, h, w)
    assert abs(float(target.sum()) - 1) < 1e-6
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    blob = torch.exp(-((xx - 12.3) ** 2 + (yy - 7.6) ** 2) / 4.0)[None]
    peak, score = subpixel_peaks(blob)
    assert torch.allclose(peak[0], uv[0, 0], atol=0.15)
    assert float(score[0]) > 0.9


def test_pnp_recovers_a_known_pose_from_exact_correspondences():
    det = Detector(1020, 256, 256, 280 / 256, 280 / 256, 4.0, -6.0)
    T = carm_pose(np.array([5.0, -10.0, -170.0]), 18, -9, 4, 780)
    rng = np.random.default_rng(0)
    X = rng.uniform(-90, 90, (120, 3)) + np.array([5.0, -10.0, -170.0])
    uv = project(det.K, T, X)
    uv[:25] += rng.uniform(-40, 40, (25, 2))  # 20 % gross outliers
    result = solve_pnp(X, uv, det.K, threshold_px=2.0)
    assert result.inliers[25:].all() and not result.inliers[:25].any()
    np.testing.assert_allclose(result.T_ct_source, T, atol=1e-4)
    assert result.reprojection_error_px < 1e-6


def planted_peaks():
    """Random unit embeddings (16 x 40 x 48) with 5 landmarks' subspaces planted at known pixels."""
    torch.manual_seed(1)
    d, t, h, w = 16, 3, 40, 48
    emb = torch.nn.functional.normalize(torch.randn(d, h, w), dim=0)
    # Plant, for each landmark, its subspace at one pixel: the full map peaks there at 1.
    spots = [(5, 7), (30, 40), (0, 47), (39, 0), (20, 21)]
    basis = []
    for v, u in spots:
        q = torch.linalg.qr(torch.randn(d, t))[0]
        emb[:, v, u] = q[:, 0]
        # a 3 x 3 peak, as wide as real ones: every 3 x 3 block holds a coarse (even, even) pixel
        for dv, du in ((dv, du) for dv in (-1, 0, 1) for du in (-1, 0, 1) if dv or du):
            if 0 <= v + dv < h and 0 <= u + du < w:
                emb[:, v + dv, u + du] = torch.nn.functional.normalize(q[:, 0] + 0.3 * emb[:, v + dv, u + du], dim=0)
        basis.append(q)
    return torch.stack(basis), emb


def test_coarse_to_fine_finds_the_full_resolution_peaks():
    basis, emb = planted_peaks()
    full_uv, full_score = subpixel_peaks(similarity(basis[None], emb[None])[0])
    uv, score = coarse_to_fine_peaks(basis, emb)
    assert torch.allclose(uv, full_uv, atol=1e-5) and torch.allclose(score, full_score, atol=1e-5)


def test_coarse_maps_in_chunks_of_landmarks_find_the_same_peaks(monkeypatch):
    basis, emb = planted_peaks()
    uv, score = coarse_to_fine_peaks(basis, emb)  # one chunk
    # two landmarks per chunk (3 templates, 20 x 24 coarse pixels): chunks of 2, 2 and 1
    monkeypatch.setattr(subspace, "COARSE_CHUNK_FLOATS", 2 * 3 * 20 * 24)
    chunked_uv, chunked_score = coarse_to_fine_peaks(basis, emb)
    assert torch.equal(chunked_uv, uv) and torch.equal(chunked_score, score)


def test_a_window_about_a_prediction_finds_the_peak_or_says_it_is_not_inside():
    basis, emb = planted_peaks()
    spots = torch.tensor([(7, 5), (40, 30), (47, 0), (0, 39), (21, 20)], dtype=torch.float32)  # u, v
    full_uv, _ = subpixel_peaks(similarity(basis[None], emb[None])[0])
    # predictions 2 px off: every planted peak inside its window (the image's edge ones excepted)
    uv, score, inside = window_peaks(basis, emb, spots + torch.tensor([2.0, -2.0]), radius=4)
    # (47, 0) and (0, 39) lie on the image's edge, the rim of any window that holds them
    assert inside.tolist() == [True, True, False, False, True]
    assert torch.allclose(uv[inside], full_uv[inside], atol=1e-5) and (score[inside] > 0.99).all()
    # predictions 4 px off, a radius of 4: the window holds the peak's top on its rim, a slope
    _, _, inside = window_peaks(basis, emb, spots + torch.tensor([4.0, 0.0]), radius=4)
    assert not inside[[0, 4]].any()
