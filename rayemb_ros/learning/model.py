"""The ray-embedding encoder: a small fully convolutional UNet, sized for CPU inference.

E maps a grey X-ray (any intensity scale) to a field of unit D-dimensional ray embeddings
at the input's resolution. Two pixel-coordinate channels let it tell apart rays whose
neighbourhoods look alike (left and right ribs, say).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import nn


@dataclass(frozen=True)
class EncoderConfig:
    embed_dim: int = 32  # D, as in the paper
    widths: tuple[int, ...] = (32, 48, 96, 160)  # channels per UNet level
    image_size: int = 128  # working width in pixels (frames are resized to it)

    def as_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> EncoderConfig:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def _block(cin: int, cout: int) -> nn.Sequential:
    groups = 8 if cout % 8 == 0 else 1
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.GroupNorm(groups, cout),
        nn.SiLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.GroupNorm(groups, cout),
        nn.SiLU(inplace=True),
    )


def standardize(images: Float[torch.Tensor, "B 1 H W"]) -> Float[torch.Tensor, "B 1 H W"]:
    """Zero mean, unit variance per image: no absolute intensity scale is assumed."""
    mean = images.mean(dim=(2, 3), keepdim=True)
    std = images.std(dim=(2, 3), keepdim=True)
    return (images - mean) / (std + 1e-6)


class Encoder(nn.Module):
    def __init__(self, config: EncoderConfig = EncoderConfig()):
        super().__init__()
        self.config = config
        w = config.widths
        self.down = nn.ModuleList([_block(3, w[0])] + [_block(w[i - 1], w[i]) for i in range(1, len(w))])
        self.up = nn.ModuleList([_block(w[i] + w[i - 1], w[i - 1]) for i in range(len(w) - 1, 0, -1)])
        self.head = nn.Conv2d(w[0], config.embed_dim, 1)

    @property
    def stride(self) -> int:
        """Input sizes must be multiples of this."""
        return 2 ** (len(self.config.widths) - 1)

    def forward(self, images: Float[torch.Tensor, "B 1 H W"]) -> Float[torch.Tensor, "B D H W"]:
        return F.normalize(self.head(self.features(images)), dim=1)

    def features(self, images: Float[torch.Tensor, "B 1 H W"]) -> Float[torch.Tensor, "B C H W"]:
        """The UNet body's last feature map (C = widths[0]), before the head: other heads
        (e.g. the fixed-landmark heatmaps) reuse it."""
        b, _, h, w = images.shape
        ys = torch.linspace(-1, 1, h, device=images.device, dtype=images.dtype)
        xs = torch.linspace(-1, 1, w, device=images.device, dtype=images.dtype)
        grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij")).expand(b, 2, h, w)
        x = torch.cat([standardize(images), grid], dim=1)
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        for block, skip in zip(self.up, reversed(skips[:-1])):
            x = block(torch.cat([F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False), skip], 1))
        return x
