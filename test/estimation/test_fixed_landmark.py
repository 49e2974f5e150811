"""The fixed-landmark baseline: its 14 landmarks, a short training run that lowers the loss,
and the shipped weights registering a frame of the bundled CT."""

import numpy as np
import torch

from rayemb_ros.geometry.camera import project
from rayemb_ros.estimation.fixed_landmark import FixedLandmarkEstimator
from rayemb_ros.learning.landmark_net import (
    LANDMARKS, HeatmapNet, LandmarkSampler, heatmap_loss, structure_centroids, train,
)
from rayemb_ros.evaluation.metrics import frame_mtre, target_points
from rayemb_ros.learning.model import EncoderConfig
from rayemb_ros.imaging.render import NanoRenderer
from rayemb_ros.imaging.simulate import plan
from rayemb_ros.learning.config import TrainConfig


def test_landmarks_are_14_distinct_bone_centroids_inside_the_ct(example_volume):
    points = structure_centroids()
    assert points.shape == (len(LANDMARKS), 3) == (14, 3)
    ijk = example_volume.ct_to_voxels(points)
    assert ((ijk > -0.5) & (ijk < np.array(example_volume.shape) - 0.5)).all()
    gaps = np.linalg.norm(points[:, None] - points[None], axis=-1) + np.eye(14) * 1e9
    assert gaps.min() > 20.0  # mm: well spread


def test_short_training_lowers_the_loss(coarse_ct, tmp_path):
    ct = coarse_ct
    config = TrainConfig(
        volumes=(str(ct),), steps=30, batch=2, lr=3e-3, warmup=1, landmark_pool=14, val_frames=2, val_every=30,
        ckpt_every=30, device="cpu", encoder=EncoderConfig(embed_dim=14, widths=(8, 16, 16, 16), image_size=48),
    )
    sampler = LandmarkSampler(config, structure_centroids(), torch.device("cpu"))
    probe = [sampler.sample(np.random.default_rng([7, i])) for i in range(3)]
    assert probe[0].uv.shape == (2, 14, 2) and probe[0].visible.any()

    def loss_of(net):
        with torch.no_grad():
            return float(np.mean([heatmap_loss(*net.eval()(b.images), b).item() for b in probe]))

    torch.manual_seed(config.seed)
    before = loss_of(HeatmapNet(config.encoder))
    summary = train(config, tmp_path / "w.pt", progress=False)
    estimator = FixedLandmarkEstimator(tmp_path / "w.pt", device="cpu")
    assert loss_of(estimator.net) < before - 0.2, (before, loss_of(estimator.net))
    assert summary["steps"] == 30 and estimator.names == LANDMARKS


def test_shipped_weights_register_a_frame(example_volume):
    shot = plan(example_volume, 1, 1000, 256, 256)[0]  # a seed training never draws
    image = NanoRenderer(example_volume).render_np(shot.T_ct_source[None], shot.detector)[0]
    estimator = FixedLandmarkEstimator(device="cpu")
    estimate = estimator.estimate(image, shot.detector.K)
    n = len(estimate.landmarks)
    assert 6 <= n <= 14
    assert estimate.landmarks.points_ct.shape == (n, 3) and estimate.landmarks.uv.shape == (n, 2)
    assert estimate.landmarks.inliers.shape == (n,) and estimate.landmarks.scores.shape == (n,)
    assert estimate.ok and estimate.T_ct_source.shape == (4, 4)
    truth = project(shot.detector.K, shot.T_ct_source, estimate.landmarks.points_ct)
    assert np.median(np.linalg.norm(estimate.landmarks.uv - truth, axis=1)) < 3.0  # px at 256
    assert frame_mtre(estimate.T_ct_source, shot.T_ct_source, target_points(example_volume)) < 10.0
