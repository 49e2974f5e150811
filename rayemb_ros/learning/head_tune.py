"""Adapting the encoder to one patient's CT in minutes on a CPU: its last layer only.

The encoder is a UNet body (``Encoder.features``: nearly all of the cost) and a 1x1
convolution head. Here the body's features of training pairs of this CT are computed once,
and only the head learns, with the training objective, from those features: a fraction of a
second per step where a whole-encoder step takes ~25 s on 2 CPU cores (batch 8). What it
can learn is limited to re-weighting the body's features; whether that helps on an anatomy
the encoder never saw is measured in docs/prepare.md.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from rayemb_ros.geometry.volume import Volume
from rayemb_ros.learning.config import TrainConfig
from rayemb_ros.learning.model import Encoder
from rayemb_ros.learning.objective import infonce_loss, peak_errors, similarity_of
from rayemb_ros.learning.pairs import Batch, PairSampler, batch_rng

# The pairs' draws: streams apart from any training run's (seed, step) and from validation's.
TRAIN_STREAM, VAL_STREAM = 2**32 + 1, 2**32 + 2


def _features(encoder: Encoder, batch: Batch) -> torch.Tensor:
    with torch.no_grad():
        return encoder.features(torch.cat([batch.queries, batch.templates]))


def tune_head(encoder: Encoder, volume: Volume, config: TrainConfig, batches: int, steps: int,
              val_batches: int = 2, progress: bool = True) -> dict[str, float]:
    """Train ``encoder.head`` in place on ``batches`` pair batches of ``volume`` (rendered and
    run through the body once), ``steps`` AdamW steps with ``config``'s lr, tau and templates;
    the median peak error (px) on ``val_batches`` other batches before and after, and the
    first and last step's loss."""
    from tqdm import tqdm

    device = next(encoder.parameters()).device
    sampler = PairSampler(config, device, volume)
    draw = lambda stream, i: sampler.sample(batch_rng(config.seed, stream + i))  # noqa: E731
    bar = tqdm(total=batches + val_batches + steps, disable=not progress, desc="adapt head", dynamic_ncols=True)
    cached = []
    for i in range(batches + val_batches):
        batch = draw(TRAIN_STREAM if i < batches else VAL_STREAM, i)
        cached.append((batch, _features(encoder, batch)))
        bar.update(1)
    train, val = cached[:batches], cached[batches:]

    def val_px() -> float:
        with torch.no_grad():
            errors = [peak_errors(similarity_of(F.normalize(encoder.head(f), dim=1), b, config.templates),
                                  b.uv_query, b.valid) for b, f in val]
        return float(np.median(torch.cat(errors).numpy()))

    before, losses = val_px(), []
    opt = torch.optim.AdamW(encoder.head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, steps))
    for step in range(steps):
        batch, features = train[step % batches]
        emb = F.normalize(encoder.head(features), dim=1)
        loss = infonce_loss(similarity_of(emb, batch, config.templates), batch, config.tau)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{loss.item():.3f}")
        bar.update(1)
    bar.close()
    encoder.eval()
    return {"val_px_before": before, "val_px_after": val_px(), "batches": batches, "steps": steps,
            "loss_first": losses[0] if losses else float("nan"), "loss_last": losses[-1] if losses else float("nan")}
