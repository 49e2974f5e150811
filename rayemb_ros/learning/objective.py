"""The training objective (the paper's): for each 3D point, the query pixel whose embedding
is closest to the span of the point's template embeddings must be its true projection:
InfoNCE over all query pixels, the true (sub-pixel) location as positive. And the validation
measure: how far each similarity map's peak lies from the true projection.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float

from rayemb_ros.learning.config import TrainConfig
from rayemb_ros.learning.model import Encoder
from rayemb_ros.learning.pairs import Batch
from rayemb_ros.learning.subspace import sample_embeddings, similarity, soft_target, subpixel_peaks, subspace_basis


def batch_similarity(encoder: Encoder, batch: Batch, templates_per_query: int) -> torch.Tensor:
    """sim(P, x) of every query pixel for every point: B x P x H x W."""
    return similarity_of(encoder(torch.cat([batch.queries, batch.templates])), batch, templates_per_query)


def similarity_of(emb: Float[torch.Tensor, "N D H W"], batch: Batch, templates_per_query: int) -> torch.Tensor:
    """``batch_similarity`` from the embeddings of the batch's queries, then its templates."""
    b = batch.queries.shape[0]
    emb_q, emb_t = emb[:b], emb[b:]
    f = sample_embeddings(emb_t, batch.uv_templates)  # (B T) P D
    f = f.reshape(b, templates_per_query, *f.shape[1:]).transpose(1, 2)  # B P T D
    return similarity(subspace_basis(f), emb_q)


def infonce_loss(sim: torch.Tensor, batch: Batch, tau: float) -> torch.Tensor:
    b, p, h, w = sim.shape
    logp = F.log_softmax(sim.reshape(b, p, h * w) / tau, dim=-1)
    target = soft_target(batch.uv_query, batch.valid, h, w)
    per_point = -(target * logp).sum(-1)
    return per_point.sum() / batch.valid.sum().clamp_min(1)


def batch_loss(encoder: Encoder, batch: Batch, config: TrainConfig) -> torch.Tensor:
    """The training objective of one batch (InfoNCE of the subspace similarity maps)."""
    return infonce_loss(batch_similarity(encoder, batch, config.templates), batch, config.tau)


def peak_errors(
    maps: Float[torch.Tensor, "B P H W"], uv: Float[torch.Tensor, "B P 2"], valid: torch.Tensor
) -> Float[torch.Tensor, "N"]:
    """Distances (px, on the CPU) between each map's sub-pixel peak and the true location,
    for the valid (B, P) entries."""
    b, p, h, w = maps.shape
    peaks, _ = subpixel_peaks(maps.reshape(b * p, h, w))
    return (peaks.reshape(b, p, 2) - uv).norm(dim=-1)[valid].cpu()
