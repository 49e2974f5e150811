"""Training the encoder with the paper's objective on simulated DRR pairs of one CT
(:mod:`~rayemb_ros.learning.pairs`, :mod:`~rayemb_ros.learning.objective`).

Resumable: the training state is saved beside the output every ``ckpt_every`` steps and
picked up again by the same call (:func:`~rayemb_ros.learning.fit.fit`). Each step's
randomness derives from (seed, step), so a resumed run draws what an uninterrupted one would.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from rayemb_ros.learning.checkpoint import load_encoder, save_weights
from rayemb_ros.learning.config import TrainConfig, config_json
from rayemb_ros.learning.device import pick_device
from rayemb_ros.learning.fit import fit
from rayemb_ros.learning.model import Encoder
from rayemb_ros.learning.objective import batch_loss, localisation_error
from rayemb_ros.learning.pairs import PairSampler


def train(config: TrainConfig, out: Path, progress: bool = True) -> dict:
    """Train (or resume) and write the weights to ``out``; returns the summary metrics."""
    device = pick_device(config.device)
    torch.manual_seed(config.seed)
    sampler = PairSampler(config, device)
    encoder = Encoder(config.encoder).to(device)
    if config.init:
        encoder.load_state_dict(load_encoder(config.init)[0].state_dict())
    val_rng = np.random.default_rng([config.seed, 2**31])
    val = [sampler.sample(val_rng) for _ in range(max(1, config.val_frames // config.batch))]

    def step_loss(step: int) -> torch.Tensor:
        return batch_loss(encoder, sampler.sample(np.random.default_rng([config.seed, step])), config)

    summary = fit(encoder, config, out, step_loss, lambda: localisation_error(encoder, val, config.templates), progress)
    save_weights(out, encoder.cpu(), {"train": config_json(config), "metrics": summary})
    return summary
