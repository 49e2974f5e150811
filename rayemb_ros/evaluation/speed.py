"""How fast the pieces run on this machine, stage by stage (``rayemb speed``).

* a 64-template bank at 128 px, rendered cold (empty cache) and loaded warm;
* training: pairs rendered per hour (PairSampler: rendering + fluoroscopy degradation), and
  a whole step (rendering, forward and backward) at the default training settings;
* the estimator: preload of a CT cold and warm, and frame -> pose per stage, with refinement
  (the default) and without it (PnP and the depth search).

Timing lives in a command, never in tests.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import replace

import numpy as np
import torch

from rayemb_ros.params import Params


def _timed(fn):
    started = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - started


def measure(volume_path: str, device: str, frames: int) -> dict:
    from rayemb_ros.estimation.estimator import Estimator
    from rayemb_ros.imaging.fluoro import apply
    from rayemb_ros.geometry.poses import reference_detector, template_poses
    from rayemb_ros.imaging.render import NanoRenderer, template_bank
    from rayemb_ros.imaging.simulate import plan
    from rayemb_ros.learning.model import Encoder
    from rayemb_ros.learning.config import TrainConfig
    from rayemb_ros.learning.device import pick_device
    from rayemb_ros.learning.objective import batch_loss
    from rayemb_ros.learning.pairs import PairSampler
    from rayemb_ros.geometry.volume import load_volume

    dev = pick_device(device)
    results: dict = {"device": str(dev), "torch_threads": torch.get_num_threads()}
    volume = load_volume(volume_path)
    detector = reference_detector(128, 128)
    poses = template_poses(64, volume.center)
    previous = os.environ.get("RAYEMB_CACHE")
    try:
        with tempfile.TemporaryDirectory() as cache:
            os.environ["RAYEMB_CACHE"] = cache  # an empty cache: the first render is cold
            _, results["template_bank_64x128px_cold_s"] = _timed(lambda: template_bank(volume, detector, poses, dev))
            _, results["template_bank_64x128px_warm_s"] = _timed(lambda: template_bank(volume, detector, poses, dev))
        with tempfile.TemporaryDirectory() as cache:
            os.environ["RAYEMB_CACHE"] = cache
            estimator = Estimator(Params(device=str(dev)))
            info = estimator.load_volume(volume_path)
            results["preload_cold_s"] = info.load_seconds
            results["preload_warm_s"] = estimator.load_volume(volume_path).load_seconds
            # refinement off (PnP and the depth search): the same settings, so the same scene,
            # read from the cache
            fast = Estimator(replace(estimator.params, refine=False))
            fast.load_volume(volume_path)
    finally:
        if previous is None:
            os.environ.pop("RAYEMB_CACHE", None)
        else:
            os.environ["RAYEMB_CACHE"] = previous

    config = TrainConfig(volumes=(volume_path,), device=str(dev))
    sampler = PairSampler(config, dev)
    rng = np.random.default_rng(0)
    sampler.sample(rng)  # warm-up (kernels, caches)
    batch_s = min(_timed(lambda: sampler.sample(rng))[1] for _ in range(3))
    results["training_pairs_per_hour"] = config.batch * 3600.0 / batch_s
    results["training_batch_s"] = batch_s
    # What a training run costs: the batch's rendering plus the encoder's forward and backward
    # pass over queries and templates (on the CPU several times the rendering alone).
    encoder = Encoder(config.encoder).to(dev)  # the cost does not depend on the weights

    def step() -> None:
        batch_loss(encoder, sampler.sample(rng), config).backward()

    step()  # warm-up
    step_s = min(_timed(step)[1] for _ in range(2))
    results["training_step_s"] = step_s
    results["training_step_pairs_per_hour"] = config.batch * 3600.0 / step_s
    results["training_batch"] = config.batch
    results["training_templates"] = config.templates

    renderer = NanoRenderer(volume, dev)
    stages: dict[str, dict[str, list[float]]] = {"frame_ms": {}, "frame_ms_no_refine": {}}
    for shot in plan(volume, frames, 4242, 256, 256):
        image = apply(renderer.render_np(shot.T_ct_source[None], shot.detector)[0], shot.style, rng)
        for key, est in (("frame_ms", estimator), ("frame_ms_no_refine", fast)):
            for name, ms in est.estimate(image, shot.detector.K).stage_ms.items():
                stages[key].setdefault(name, []).append(ms)
    for key, by_stage in stages.items():
        results[key] = {name: {"p50": float(np.median(v)), "p95": float(np.percentile(v, 95))} for name, v in by_stage.items()}
    results["frames"] = frames
    results["num_landmarks"] = info.num_landmarks
    results["num_keep"] = estimator.params.num_keep
    return results
