"""`rayemb train`: train the ray-embedding encoder on a CT (resumable, progress bar)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rayemb_ros.learning.config import TrainConfig
from rayemb_ros.learning.model import EncoderConfig
from rayemb_ros.params import DEVICES


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
    parser.add_argument("--device", default=d.device, choices=DEVICES)
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    from rayemb_ros.learning.train import train  # torch and the renderer: only when training

    config = TrainConfig(
        volume=args.volume, steps=args.steps, batch=args.batch, templates=args.templates, points=args.points,
        lr=args.lr, tau=args.tau, warmup=args.warmup, init=args.init, seed=args.seed, val_every=args.val_every, ckpt_every=args.ckpt_every, device=args.device,
        encoder=EncoderConfig(image_size=args.image_size),
    )
    summary = train(config, args.out, progress=not args.no_progress)
    print(f"wrote {args.out}: {summary['steps']} steps, validation localisation error {summary['val_px_median']:.2f} px")
    return 0
