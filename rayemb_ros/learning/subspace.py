"""The subspace maths of RayEmb, shared by training and inference.

A 3D point X is crossed by one ray per image. Its embeddings in T template images span a
subspace with orthonormal basis Q (D x T); P = Q Q^T = F F^+. A query pixel x scores

    sim(P, x) = e^T P e / (|e| |P e|) = |Q^T e| / |e|      (in [0, 1]),

1 when e(x) lies in the span, 0 when it is orthogonal to it. The landmark of X in the query
is the pixel with the highest score.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float


def sample_embeddings(
    embeddings: Float[torch.Tensor, "B D H W"], uv: Float[torch.Tensor, "B N 2"]
) -> Float[torch.Tensor, "B N D"]:
    """Bilinear embeddings at pixels (u = column, v = row, centres at integers)."""
    h, w = embeddings.shape[-2:]
    grid = torch.stack([(uv[..., 0] + 0.5) / w * 2 - 1, (uv[..., 1] + 0.5) / h * 2 - 1], dim=-1)
    out = F.grid_sample(embeddings, grid[:, :, None], mode="bilinear", padding_mode="border", align_corners=False)
    return out[..., 0].transpose(1, 2)


def subspace_basis(template_embeddings: Float[torch.Tensor, "... T D"]) -> Float[torch.Tensor, "... D T"]:
    """Orthonormal basis of the span of T embeddings (reduced QR of F^T)."""
    q, _ = torch.linalg.qr(template_embeddings.transpose(-1, -2).double(), mode="reduced")
    return q.to(template_embeddings.dtype)


def similarity(
    basis: Float[torch.Tensor, "B P D T"], embeddings: Float[torch.Tensor, "B D H W"]
) -> Float[torch.Tensor, "B P H W"]:
    """sim(P, x) for every pixel; embeddings need not be normalised."""
    b, d, h, w = embeddings.shape
    e = embeddings.reshape(b, d, h * w)
    coeff = torch.einsum("bpdt,bdn->bptn", basis, e)
    sim = coeff.pow(2).sum(2).sqrt() / e.pow(2).sum(1).sqrt().clamp_min(1e-12)[:, None]
    return sim.reshape(b, -1, h, w)


def subpixel_peaks(sim: Float[torch.Tensor, "P H W"]) -> tuple[Float[torch.Tensor, "P 2"], Float[torch.Tensor, "P"]]:
    """Argmax of each map with a sub-pixel correction (a parabola through the neighbours
    along each axis), and the peak score."""
    p, h, w = sim.shape
    flat = sim.reshape(p, -1)
    score, idx = flat.max(dim=1)
    v = torch.div(idx, w, rounding_mode="floor")
    u = idx % w
    padded = F.pad(sim[:, None], (1, 1, 1, 1), mode="replicate")[:, 0]
    rows = torch.arange(p, device=sim.device)

    def offset(minus, centre, plus):
        denom = minus - 2 * centre + plus
        return torch.where(denom < -1e-9, 0.5 * (minus - plus) / denom, torch.zeros_like(denom)).clamp(-0.5, 0.5)

    c = padded[rows, v + 1, u + 1]
    du = offset(padded[rows, v + 1, u], c, padded[rows, v + 1, u + 2])
    dv = offset(padded[rows, v, u + 1], c, padded[rows, v + 2, u + 1])
    return torch.stack([u + du, v + dv], dim=1).to(sim.dtype), score


def soft_target(uv: Float[torch.Tensor, "B P 2"], valid: Bool[torch.Tensor, "B P"], h: int, w: int) -> Float[torch.Tensor, "B P HW"]:
    """The InfoNCE positive: the true sub-pixel location spread bilinearly over its 4 pixels."""
    b, p, _ = uv.shape
    u = uv[..., 0].clamp(0, w - 1 - 1e-4)
    v = uv[..., 1].clamp(0, h - 1 - 1e-4)
    u0, v0 = u.floor().long(), v.floor().long()
    fu, fv = u - u0, v - v0
    target = torch.zeros(b, p, h * w, device=uv.device, dtype=uv.dtype)
    for du, dv, wt in ((0, 0, (1 - fu) * (1 - fv)), (1, 0, fu * (1 - fv)), (0, 1, (1 - fu) * fv), (1, 1, fu * fv)):
        idx = ((v0 + dv).clamp(max=h - 1) * w + (u0 + du).clamp(max=w - 1))[..., None]
        target.scatter_add_(2, idx, (wt * valid)[..., None])
    return target


# The coarse maps are computed a few landmarks at a time, so that their T coefficients per
# pixel (COARSE_CHUNK_FLOATS of them, 4 MB) stay in the CPU's caches: all 287 landmarks at
# once (8 templates, 64 x 64 pixels: 38 MB) took 3x as long on 2 cores for the same sums.
COARSE_CHUNK_FLOATS = 2**20


def coarse_to_fine_peaks(
    basis: Float[torch.Tensor, "P D T"], embeddings: Float[torch.Tensor, "D H W"], stride: int = 2, radius: int = 3
) -> tuple[Float[torch.Tensor, "P 2"], Float[torch.Tensor, "P"]]:
    """``subpixel_peaks`` of every landmark's similarity map at a fraction of the cost: the
    map on every ``stride``-th pixel finds each peak (peaks are a few pixels wide), then the
    full-resolution map in a (2 radius + 1)^2 window around it places it."""
    d, h, w = embeddings.shape
    sparse = embeddings[None, :, ::stride, ::stride]
    chunk = max(1, COARSE_CHUNK_FLOATS // (basis.shape[-1] * sparse.shape[-2] * sparse.shape[-1]))
    coarse = torch.cat([similarity(basis[None, i : i + chunk], sparse)[0] for i in range(0, len(basis), chunk)])
    _, idx = coarse.reshape(len(basis), -1).max(dim=1)
    wc = coarse.shape[-1]
    v0 = torch.div(idx, wc, rounding_mode="floor") * stride
    u0 = (idx % wc) * stride
    uv, score, _ = window_peaks(basis, embeddings, torch.stack([u0, v0], dim=1), radius)
    return uv, score


def window_peaks(
    basis: Float[torch.Tensor, "P D T"], embeddings: Float[torch.Tensor, "D H W"], centres: Float[torch.Tensor, "P 2"],
    radius: int,
) -> tuple[Float[torch.Tensor, "P 2"], Float[torch.Tensor, "P"], Bool[torch.Tensor, "P"]]:
    """``subpixel_peaks`` of each landmark's similarity map within a (2 radius + 1)^2 window
    about its centre (u, v, pixels of ``embeddings``; a window is moved to fit the image), and
    whether each peak lies inside its window rather than on its rim: a peak on the rim may be
    the slope of a peak outside the window (or the image), not the landmark."""
    d, h, w = embeddings.shape
    centres = centres.round().long()
    size = 2 * radius + 1
    # Window corners, kept inside the image so every window is full size.
    top = (centres[:, 1] - radius).clamp(0, max(0, h - size))
    left = (centres[:, 0] - radius).clamp(0, max(0, w - size))
    offsets = torch.arange(size, device=embeddings.device)
    rows = (top[:, None] + offsets).clamp(max=h - 1)  # P S
    cols = (left[:, None] + offsets).clamp(max=w - 1)
    flat = (rows[:, :, None] * w + cols[:, None, :]).reshape(len(basis), -1)  # P S*S
    # Gathered pixel by pixel (D contiguous values each; a view of the encoder's channels-last
    # output): ~40 % faster on a CPU than gathering each of the D channel planes.
    window = embeddings.permute(1, 2, 0).reshape(-1, d)[flat]  # P S*S D
    coeff = torch.bmm(window, basis)  # P S*S T
    sim = (coeff.pow(2).sum(2) / window.pow(2).sum(2).clamp_min(1e-24)).sqrt()
    uv, score = subpixel_peaks(sim.reshape(len(basis), rows.shape[1], cols.shape[1]))
    inside = ((uv > 0.5) & (uv < size - 1.5)).all(dim=1)
    return uv + torch.stack([left, top], dim=1).to(uv.dtype), score, inside
