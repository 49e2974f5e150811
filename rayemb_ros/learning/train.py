"""Training the encoder with the paper's objective on simulated DRR pairs of one or more CTs,
optionally a new patient per batch (:mod:`~rayemb_ros.learning.pairs`,
:mod:`~rayemb_ros.learning.objective`), data-parallel under torchrun
(:mod:`~rayemb_ros.learning.distributed`), validated on held-out CTs one by one.

Resumable: the training state is saved beside the output every ``ckpt_every`` steps and
picked up again by the same call (:func:`~rayemb_ros.learning.fit.fit`). Each step's
randomness derives from (seed, step), so a resumed run draws what an uninterrupted one would.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from rayemb_ros.geometry.volume import load_volume
from rayemb_ros.learning import distributed
from rayemb_ros.learning.checkpoint import load_encoder, save_weights, weights_digest
from rayemb_ros.learning.config import TrainConfig, config_json
from rayemb_ros.learning.distributed import Ranks
from rayemb_ros.learning.fit import fit
from rayemb_ros.learning.model import Encoder
from rayemb_ros.learning.objective import batch_loss, batch_similarity, peak_errors
from rayemb_ros.learning.pairs import Batch, PairSampler, PatientPool, Prefetch, batch_rng


class Validation:
    """Validation batches of each validation CT (the held-out ``val_volumes``, else the
    training CTs at other poses), rendered once; each rank scores its share of them and the
    errors are gathered, so every rank reports the same numbers."""

    def __init__(self, config: TrainConfig, device: torch.device, ranks: Ranks, pool: PatientPool):
        self.config, self.ranks = config, ranks
        held_out = bool(config.val_volumes)
        specs = config.val_volumes if held_out else pool.volumes
        per_volume = max(1, config.val_frames // config.batch)
        self.items: list[tuple[str, Batch]] = []
        for i, spec in enumerate(specs):
            sampler = PairSampler(config, device, load_volume(spec)) if held_out else pool.sampler(spec)
            rng = np.random.default_rng([config.seed, 2**31] if i == 0 else [config.seed, 2**31, i])
            self.items += [(spec, sampler.sample(rng)) for _ in range(per_volume)]

    @torch.no_grad()
    def __call__(self, encoder: Encoder) -> tuple[float, dict[str, float]]:
        """Median peak error (px) over all validation CTs, and per CT."""
        mine = [(spec, peak_errors(batch_similarity(encoder, b, self.config.templates), b.uv_query, b.valid).numpy())
                for spec, b in self.items[self.ranks.rank::self.ranks.world]]
        errors: dict[str, list[np.ndarray]] = {}
        for part in distributed.gather(mine, self.ranks):
            for spec, e in part:
                errors.setdefault(spec, []).append(e)
        per_volume = {spec: float(np.median(np.concatenate(e))) for spec, e in errors.items()}
        return float(np.median(np.concatenate([np.concatenate(e) for e in errors.values()]))), per_volume


def train(config: TrainConfig, out: Path, progress: bool = True) -> dict:
    """Train (or resume) and write the weights to ``out``; returns the summary metrics. Under
    torchrun, data-parallel: every rank draws its own batches, rank 0 writes."""
    ranks, device = distributed.start(config.device)
    try:
        torch.manual_seed(config.seed)  # the same initial weights on every rank
        pool = PatientPool(config, device)
        encoder = Encoder(config.encoder).to(device)
        if config.init:
            encoder.load_state_dict(load_encoder(config.init)[0].state_dict())
        validation = Validation(config, device, ranks, pool)
        model = distributed.wrap(encoder, ranks, device)

        def make(step: int) -> Batch:
            return pool.batch(batch_rng(config.seed, step, ranks.rank))

        # On a GPU the next batches render while a step trains; on the CPU both want the cores.
        batch_for = Prefetch(make, config.steps) if device.type == "cuda" else make

        def step_loss(step: int) -> torch.Tensor:
            return batch_loss(model, batch_for(step), config)

        summary = fit(encoder, config, out, step_loss, lambda: validation(encoder), progress and ranks.main, ranks.main)
        summary["weights"] = weights_digest(encoder)  # the same on every rank: DDP keeps them in step
        if ranks.main:
            save_weights(out, encoder.cpu(), {"train": config_json(config), "metrics": summary})
        distributed.barrier(ranks)  # the weights are written before any rank returns
        return summary
    finally:
        distributed.stop(ranks)
