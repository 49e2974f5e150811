"""Preparing a patient's CT the day before surgery (``rayemb prepare``): everything that depends
only on the CT, done once, into a bundle (:mod:`rayemb_ros.estimation.bundle`), then a
self-check that says, before surgery, how well this CT registers.

1. weights: the patient-agnostic checkpoint, or, with ``finetune_steps``, those weights
   fine-tuned on this CT (its estimated time printed first);
2. the scene: landmark candidates in bone, template DRRs, subspaces;
3. the self-check: ``frames`` held-out frames of this CT simulated with the test renderer
   (diffdrr), noise and collimation, at poses of seeds training never draws, registered with
   the bundle at the default trust gates; its numbers over all frames (a refused frame is a
   failure), a verdict, and a report page.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from rayemb_ros import __version__
from rayemb_ros.estimation.bundle import (
    SELF_CHECK, WEIGHTS, Record, SelfCheck, default_gates, save_scene, scene_settings, write_record,
)
from rayemb_ros.evaluation.metrics import GFR_THRESHOLDS_MM
from rayemb_ros.geometry.volume import EXAMPLE, Volume, load_volume, source_digest
from rayemb_ros.learning.checkpoint import DEFAULT_CHECKPOINT, load_encoder, weights_digest
from rayemb_ros.learning.config import TrainConfig
from rayemb_ros.params import Params

# Poses, detectors and noise of the self-check: a seed no training run draws (those use
# [seed, step] streams) and the benchmark does not use (1000, 2000).
SELF_CHECK_SEED = 9100


@dataclass(frozen=True)
class PrepareConfig:
    volume: str
    out: Path
    checkpoint: str = ""  # "" = the shipped, patient-agnostic weights
    finetune_steps: int = 0
    device: str = "auto"
    frames: int = 24  # self-check frames
    size: int = 256  # self-check frame width = height (px)
    adapt_head_steps: int = 0  # instead: only the encoder's last layer, on features computed once (learning.head_tune)
    adapt_head_batches: int = 12  # ... from this many pair batches (8 queries, 8 templates each), rendered once


def _source_weights(config: PrepareConfig) -> Path:
    """The patient-agnostic weights a bundle starts from."""
    return Path(config.checkpoint).expanduser() if config.checkpoint else DEFAULT_CHECKPOINT


def _weights(config: PrepareConfig, log: Callable[[str], None]) -> Path:
    """BUNDLE/weights.pt: the checkpoint as it is, or fine-tuned on this CT."""
    source = _source_weights(config)
    target = config.out / WEIGHTS
    if config.adapt_head_steps:
        return _adapted_head(config, source, target, log)
    if config.finetune_steps == 0:
        shutil.copyfile(source, target)
        return target
    from rayemb_ros.learning.train import train

    tune = finetune_config(config.volume, str(source), config.finetune_steps, config.device)
    log(f"fine-tune: {config.finetune_steps} steps on {config.volume}, about {_estimate_minutes(tune):.0f} min "
        f"on {tune.device if tune.device != 'auto' else ('cuda' if torch.cuda.is_available() else 'cpu')}")
    train(tune, target, progress=True)
    return target


def finetune_config(volume: str, weights: str, steps: int, device: str = "auto") -> TrainConfig:
    """How a patient's CT fine-tunes the weights (``--finetune-steps``): the second stage of the
    shipped weights' recipe (docs/training.md): sharper peaks, 8 templates per point as at
    inference, a small learning rate from the given weights."""
    return TrainConfig(volumes=(volume,), init=weights, steps=steps, templates=8, points=64, tau=0.02, lr=3e-4,
                       warmup=max(1, min(50, steps // 5)), val_every=steps, ckpt_every=max(1, min(100, steps)),
                       device=device)


def _adapted_head(config: PrepareConfig, source: Path, target: Path, log: Callable[[str], None]) -> Path:
    """BUNDLE/weights.pt: the checkpoint with its last layer adapted to this CT."""
    from rayemb_ros.learning.checkpoint import save_weights
    from rayemb_ros.learning.device import pick_device
    from rayemb_ros.learning.head_tune import tune_head

    device = pick_device(config.device)
    encoder, meta = load_encoder(source, device)
    tune = TrainConfig(volumes=(config.volume,), templates=8, points=64, tau=0.02, lr=3e-3, device=str(device))
    log(f"adapting the encoder's last layer to {config.volume}: {config.adapt_head_batches} batches rendered once, "
        f"{config.adapt_head_steps} steps")
    result = tune_head(encoder, load_volume(config.volume), tune, config.adapt_head_batches, config.adapt_head_steps,
                       val_batches=1)
    log(f"validation peak error {result['val_px_before']:.2f} px -> {result['val_px_after']:.2f} px")
    save_weights(target, encoder.cpu(), {"adapted_head": result, "from": str(source), "source_meta": meta})
    return target


def _estimate_minutes(tune) -> float:
    """One timed step (rendering, forward and backward) times the steps."""
    from rayemb_ros.learning.device import pick_device
    from rayemb_ros.learning.model import Encoder
    from rayemb_ros.learning.objective import batch_loss
    from rayemb_ros.learning.pairs import PatientPool, batch_rng

    device = pick_device(tune.device)
    pool = PatientPool(tune, device)
    encoder = Encoder(tune.encoder).to(device)
    pool.batch(batch_rng(tune.seed, 0))  # the CT's preparation: not a step
    started = time.perf_counter()
    batch_loss(encoder, pool.batch(batch_rng(tune.seed, 1)), tune).backward()
    return (time.perf_counter() - started) * tune.steps / 60.0


def self_check(folder: Path, volume: Volume, params: Params, config: PrepareConfig,
               log: Callable[[str], None]) -> SelfCheck:
    """Simulated held-out frames of this CT (``volume``) registered with the bundle ``folder``."""
    from tqdm import tqdm

    from rayemb_ros.evaluation.replay import replay
    from rayemb_ros.imaging.simulate import plan, simulate_frames
    from rayemb_ros.io.bags import write_bag

    out = folder / SELF_CHECK
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    shots = plan(volume, config.frames, SELF_CHECK_SEED, config.size, config.size)
    frames = tqdm(simulate_frames(volume, shots, SELF_CHECK_SEED), total=len(shots), desc="self-check frames",
                  unit="frame", file=sys.stderr)
    write_bag(out / "bag", frames)
    result = replay(out / "bag", str(folder), out, params)
    m = result.evaluation.metrics
    finite = lambda x: None if x is None or not np.isfinite(x) else float(x)  # noqa: E731
    check = SelfCheck(
        frames=m["frames"], median_mm=finite(m["mtre_mm"]["p50"]), p95_mm=finite(m["mtre_mm"]["p95"]),
        gfr10_percent=float(m["gfr_percent"][f"{GFR_THRESHOLDS_MM[0]:g}"]), refused=m["frames"] - m["frames_ok"],
        published_over_10mm=int(m["trust"]["accepted_over_threshold"]), default_gates=default_gates(params),
        seed=SELF_CHECK_SEED,
    )
    log(f"self-check report: {result.report}")
    return check


def prepare(config: PrepareConfig, log: Callable[[str], None] = print) -> Record:
    """Make the bundle ``config.out`` (replacing one there) and return its record."""
    from rayemb_ros.estimation.bundle import RECORD
    from rayemb_ros.estimation.estimator import Estimator

    ct_path = config.volume if config.volume == EXAMPLE else str(Path(config.volume).expanduser().resolve())
    config = replace(config, volume=ct_path)
    volume = load_volume(ct_path)  # a VolumeError or CheckpointError before any work
    load_encoder(_source_weights(config))
    digest = source_digest(ct_path)
    config.out.mkdir(parents=True, exist_ok=True)
    (config.out / RECORD).unlink(missing_ok=True)  # the folder is no bundle until it is complete again
    weights = _weights(config, log)
    params = Params(device=config.device, checkpoint=str(weights)).validated()
    estimator = Estimator(params)
    scene = estimator.prepare(volume, ct_path)
    save_scene(config.out, scene.landmarks, scene.basis.cpu().numpy())
    record = Record(ct_path=ct_path, ct_digest=digest, weights_digest=weights_digest(estimator.encoder),
                    weights_from=(config.checkpoint or "the shipped checkpoint")
                    + (f", last layer adapted to this CT ({config.adapt_head_steps} steps)" if config.adapt_head_steps else ""),
                    finetune_steps=config.finetune_steps,
                    settings=scene_settings(params), software=__version__)
    write_record(config.out, record)  # the self-check loads the bundle as the node will
    record = replace(record, self_check=self_check(config.out, volume, params, config, log))
    write_record(config.out, record)
    return record
