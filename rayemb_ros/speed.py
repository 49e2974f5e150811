"""`rayemb speed`: how fast the pieces run on this machine, stage by stage.

* a 64-template bank at 128 px, rendered cold (empty cache) and loaded warm;
* training: pairs rendered per hour (PairSampler: rendering + fluoroscopy degradation), and
  a whole step (rendering, forward and backward) at the default training settings;
* the estimator: preload of a CT cold and warm, and frame -> pose per stage, with refinement
  (the default) and without it (PnP and the depth search).

Timing lives in a command, never in tests. Prints a table and writes ``--out`` as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from .params import Params


def _timed(fn):
    started = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - started


def measure(volume_path: str, device: str, frames: int) -> dict:
    from .estimator import Estimator
    from .fluoro import apply
    from .poses import reference_detector, template_poses
    from .render import NanoRenderer, template_bank
    from .simulate import plan
    from .model import Encoder
    from .train import PairSampler, TrainConfig, batch_loss, pick_device
    from .volume import load_volume

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

    config = TrainConfig(volume=volume_path, device=str(dev))
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--volume", default="example", help="CT: NIfTI/NRRD file, DICOM folder, or 'example'")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--frames", type=int, default=10, help="frames of 256 px timed through the estimator")
    parser.add_argument("--out", type=Path, help="also write the numbers here as JSON")


def run(args: argparse.Namespace) -> int:
    r = measure(args.volume, args.device, args.frames)
    print(f"device {r['device']}, {r['torch_threads']} torch threads")
    print(f"template bank, 64 x 128 px: cold {r['template_bank_64x128px_cold_s']:.1f} s, "
          f"warm {r['template_bank_64x128px_warm_s']:.2f} s")
    print(f"preload of the CT ({r['num_landmarks']} landmarks): cold {r['preload_cold_s']:.1f} s, "
          f"warm {r['preload_warm_s']:.1f} s")
    print(f"training pairs rendered: {r['training_pairs_per_hour']:.0f} per hour ({r['training_batch_s']:.2f} s per batch)")
    print(f"training step (render, forward, backward; batch {r['training_batch']}, {r['training_templates']} templates): "
          f"{r['training_step_s']:.1f} s, {r['training_step_pairs_per_hour']:.0f} pairs per hour")
    for key, what in (("frame_ms", "refinement on (the default)"), ("frame_ms_no_refine", "refinement off")):
        print(f"frame -> pose at 256 px, {r['num_keep']} landmarks to PnP, {r['frames']} frames, {what} (ms p50 / p95):")
        for name, v in r[key].items():
            print(f"  {name:<11} {v['p50']:7.1f} {v['p95']:7.1f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(r, indent=2) + "\n")
    return 0
