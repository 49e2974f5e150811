"""A short training run on a coarse copy of the bundled CT lowers the InfoNCE loss, writes
loadable weights and resumes."""

import numpy as np
import torch

from rayemb_ros.learning.checkpoint import load_encoder
from rayemb_ros.learning.model import Encoder, EncoderConfig
from rayemb_ros.learning.config import TrainConfig
from rayemb_ros.learning.objective import batch_similarity, infonce_loss
from rayemb_ros.learning.pairs import PairSampler
from rayemb_ros.learning.train import train


def test_short_training_lowers_the_loss(coarse_ct, tmp_path):
    ct = coarse_ct
    config = TrainConfig(
        volume=str(ct), steps=30, batch=2, templates=3, points=24, lr=3e-3, warmup=1, landmark_pool=300,
        val_frames=2, val_every=30, ckpt_every=15, device="cpu",
        encoder=EncoderConfig(widths=(8, 16, 16, 16), image_size=48),
    )
    sampler = PairSampler(config, torch.device("cpu"))
    probe = [sampler.sample(np.random.default_rng([7, i])) for i in range(3)]

    def loss_of(encoder):
        with torch.no_grad():
            return float(np.mean([infonce_loss(batch_similarity(encoder.eval(), b, 3), b, config.tau).item() for b in probe]))

    torch.manual_seed(config.seed)
    before = loss_of(Encoder(config.encoder))
    out = tmp_path / "w.pt"
    summary = train(config, out, progress=False)
    trained, meta = load_encoder(out)
    after = loss_of(trained)
    assert after < before - 0.1, (before, after)
    assert meta["train"]["steps"] == 30 and summary["steps"] == 30
    assert (tmp_path / "w.pt.json").exists()
    # Resuming a finished run does nothing more and keeps the result.
    assert train(config, out, progress=False)["steps"] == 30
