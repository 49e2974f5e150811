"""`rayemb train`: the encoder, trained with the paper's objective on simulated DRR pairs.

Per sample: a query DRR at a random clinical pose and detector, degraded into a realistic
fluoroscopy frame (:mod:`rayemb_ros.fluoro`), and T clean template DRRs of the same CT at
other poses; 3D points in bone that all of them see. For each point the query pixel whose
embedding is closest to the span of the point's template embeddings must be the point's
true projection: InfoNCE over all query pixels, the true (sub-pixel) location as positive.

Pairs are rendered on the fly with nanodrr (fast on CUDA; on the CPU it is the bottleneck).
Resumable: the training state is saved beside the output every ``--ckpt-every`` steps and
picked up again by the same command. Each step's randomness derives from (seed, step), so a
resumed run draws what an uninterrupted one would.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float

from .camera import Detector, project
from .checkpoint import load_encoder, save_weights
from .fluoro import apply_batch, sample_style
from .model import Encoder, EncoderConfig
from .poses import reference_detector, sample_detector, sample_poses
from .render import NanoRenderer
from .subspace import sample_embeddings, similarity, soft_target, subpixel_peaks, subspace_basis
from .volume import load_volume, sample_landmarks


@dataclass
class TrainConfig:
    volume: str = "example"
    steps: int = 20000
    batch: int = 8
    templates: int = 6  # per query, as the subspace dimension at training time
    points: int = 48  # 3D points per query
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup: int = 300
    tau: float = 0.05  # InfoNCE temperature on the [0, 1] similarity
    seed: int = 0
    landmark_pool: int = 4000
    val_frames: int = 24
    val_every: int = 500
    ckpt_every: int = 250
    device: str = "auto"
    init: str = ""  # start from these weights (fine-tuning); "" = from scratch
    encoder: EncoderConfig = field(default_factory=EncoderConfig)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device cuda requested but torch sees no GPU")
    return torch.device(name)


@dataclass
class Batch:
    queries: torch.Tensor  # B 1 S S, degraded fluoroscopy
    templates: torch.Tensor  # (B T) 1 S S, clean DRRs
    uv_query: torch.Tensor  # B P 2
    uv_templates: torch.Tensor  # (B T) P 2
    valid: torch.Tensor  # B P


class PairSampler:
    """Renders training batches of one CT on one device."""

    def __init__(self, config: TrainConfig, device: torch.device):
        self.config = config
        self.device = device
        self.volume = load_volume(config.volume)
        self.renderer = NanoRenderer(self.volume, device)
        self.pool = sample_landmarks(self.volume, config.landmark_pool, seed=config.seed)
        size = config.encoder.image_size
        self.template_detector = reference_detector(size, size)

    def sample(self, rng: np.random.Generator) -> Batch:
        c = self.config
        b, t, p, s = c.batch, c.templates, c.points, c.encoder.image_size
        center = self.volume.center
        q_poses = sample_poses(rng, b, center)
        q_dets = [sample_detector(rng, s, s) for _ in range(b)]
        t_poses = sample_poses(rng, b * t, center)
        points = self.pool[rng.choice(len(self.pool), size=(b, p))]  # B P 3

        uv_q = np.stack([project(d.K, T, X) for d, T, X in zip(q_dets, q_poses, points)])
        uv_t = project(self.template_detector.K, t_poses, np.repeat(points, t, axis=0))
        margin = 2.0
        inside = lambda uv: ((uv >= margin) & (uv <= s - 1 - margin)).all(-1)  # noqa: E731
        # Points the query's collimator hides stay positives: the encoder places them from the
        # anatomy around them, and dropping them made PnP worse (README, the default checkpoint).
        valid = inside(uv_q) & inside(uv_t).reshape(b, t, p).all(1)

        queries = self.render_queries(rng, q_poses, q_dets)
        with torch.no_grad():  # clean templates, with the contrast the queries were drawn with
            templates = self.renderer.render(torch.as_tensor(t_poses), self.template_detector)[:, None]
        as_t = lambda a: torch.as_tensor(a, dtype=torch.float32, device=self.device)  # noqa: E731
        return Batch(queries, templates, as_t(uv_q), as_t(uv_t), torch.as_tensor(valid, device=self.device))

    def render_queries(
        self, rng: np.random.Generator, poses: Float[np.ndarray, "B 4 4"], detectors: list[Detector]
    ) -> Float[torch.Tensor, "B 1 S S"]:
        """Realistic fluoroscopy frames at the poses: DRRs degraded by a random acquisition style."""
        # Vary the HU -> attenuation mapping so that bone/soft-tissue contrast is not learned
        # as a constant (other renderers and real detectors differ).
        self.renderer.subject.set_mu(mu_bone=float(rng.uniform(0.035, 0.09)))
        with torch.no_grad():
            clean = self.renderer.render(torch.as_tensor(poses), detectors)[:, None]
            gen = torch.Generator(device=self.device).manual_seed(int(rng.integers(2**62)))
            return apply_batch(clean, [sample_style(rng) for _ in detectors], gen)


def batch_similarity(encoder: Encoder, batch: Batch, templates_per_query: int) -> torch.Tensor:
    """sim(P, x) of every query pixel for every point: B x P x H x W."""
    b = batch.queries.shape[0]
    emb = encoder(torch.cat([batch.queries, batch.templates]))
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


@torch.no_grad()
def localisation_error(encoder: Encoder, batches: list[Batch], templates_per_query: int) -> float:
    """Median distance (px) between the best-scoring pixel and the true projection."""
    errors = [peak_errors(batch_similarity(encoder, b, templates_per_query), b.uv_query, b.valid) for b in batches]
    return float(torch.cat(errors).median())


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
    save_weights(out, encoder.cpu(), {"train": _config_json(config), "metrics": summary})
    return summary


def fit(
    model: torch.nn.Module,
    config: TrainConfig,
    out: Path,
    step_loss: Callable[[int], torch.Tensor],
    validate: Callable[[], float],
    progress: bool = True,
) -> dict:
    """The resumable training loop: AdamW with warm-up and cosine decay on ``step_loss(step)``,
    ``validate()`` (a median pixel error) every ``val_every`` steps, the training state saved
    beside ``out`` every ``ckpt_every`` steps and picked up again by the same call. Uses
    ``config``'s steps, lr, weight_decay, warmup, val_every and ckpt_every; returns the summary
    (``val_px_median``, ``steps``, ``history``) with the model in eval mode."""
    from tqdm import tqdm

    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)

    def lr_at(step: int) -> float:
        if step < config.warmup:
            return (step + 1) / config.warmup
        return 0.5 * (1 + math.cos(math.pi * (step - config.warmup) / max(1, config.steps - config.warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    out.parent.mkdir(parents=True, exist_ok=True)
    state_path = out.with_name(out.name + ".train-state.pt")
    step, history = 0, []
    if state_path.exists():
        state = torch.load(state_path, map_location=next(model.parameters()).device, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        step, history = int(state["step"]), json.loads(state["history_json"])

    def save_state():
        torch.save(
            {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
             "step": step, "history_json": json.dumps(history)},
            state_path.with_suffix(".tmp"),
        )
        state_path.with_suffix(".tmp").replace(state_path)

    started = time.time()
    bar = tqdm(total=config.steps, initial=step, disable=not progress, desc="train", dynamic_ncols=True)
    val_px = history[-1]["val_px"] if history else float("nan")
    while step < config.steps:
        model.train()
        loss = step_loss(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        step += 1
        if step % config.val_every == 0 or step == config.steps:
            model.eval()
            with torch.no_grad():
                val_px = validate()
            history.append({"step": step, "loss": loss.item(), "val_px": val_px, "seconds": time.time() - started})
        if step % config.ckpt_every == 0 or step == config.steps:
            save_state()
        bar.set_postfix(loss=f"{loss.item():.3f}", val_px=f"{val_px:.2f}")
        bar.update(1)
    bar.close()
    model.eval()
    return {"val_px_median": val_px, "steps": step, "history": history}


def _config_json(config: TrainConfig) -> dict:
    d = asdict(config)
    d["encoder"] = config.encoder.as_dict()
    return d


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    parser.add_argument("--volume", default=d.volume, help="CT: NIfTI/NRRD file, DICOM folder, or 'example'")
    parser.add_argument("--out", required=True, type=Path, help="where to write the weights (.pt)")
    parser.add_argument("--steps", type=int, default=d.steps)
    parser.add_argument("--batch", type=int, default=d.batch)
    parser.add_argument("--templates", type=int, default=d.templates)
    parser.add_argument("--points", type=int, default=d.points)
    parser.add_argument("--lr", type=float, default=d.lr)
    parser.add_argument("--tau", type=float, default=d.tau, help="InfoNCE temperature")
    parser.add_argument("--warmup", type=int, default=d.warmup, help="learning-rate warm-up steps")
    parser.add_argument("--init", default=d.init, help="start from these weights (fine-tuning)")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--image-size", type=int, default=d.encoder.image_size)
    parser.add_argument("--val-every", type=int, default=d.val_every)
    parser.add_argument("--ckpt-every", type=int, default=d.ckpt_every)
    parser.add_argument("--device", default=d.device, choices=("auto", "cpu", "cuda"))
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    config = TrainConfig(
        volume=args.volume, steps=args.steps, batch=args.batch, templates=args.templates, points=args.points,
        lr=args.lr, tau=args.tau, warmup=args.warmup, init=args.init, seed=args.seed, val_every=args.val_every, ckpt_every=args.ckpt_every, device=args.device,
        encoder=EncoderConfig(image_size=args.image_size),
    )
    summary = train(config, args.out, progress=not args.no_progress)
    print(f"wrote {args.out}: {summary['steps']} steps, validation localisation error {summary['val_px_median']:.2f} px")
    return 0
