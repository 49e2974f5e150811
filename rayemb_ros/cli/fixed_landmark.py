"""Train the fixed-landmark baseline's heatmap network on the bundled CT:
``python -m rayemb_ros.cli.fixed_landmark --out FILE [--steps N --batch B --device D]``
(:mod:`rayemb_ros.learning.landmark_net`)."""

from __future__ import annotations

import argparse

from rayemb_ros.cli.arguments import output_path, positive_float, positive_int
from rayemb_ros.learning.config import TrainConfig
from rayemb_ros.learning.landmark_net import LANDMARKS, train
from rayemb_ros.learning.model import EncoderConfig
from rayemb_ros.params import DEVICES


def main(argv: list[str] | None = None) -> int:
    d = TrainConfig()
    parser = argparse.ArgumentParser(prog="python -m rayemb_ros.cli.fixed_landmark",
                                     description="Train the fixed-landmark heatmap baseline on the bundled CT.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", required=True, type=output_path, help="where to write the weights (.pt)")
    parser.add_argument("--volume", default=d.volumes[0], help="the bundled CT ('example') or a copy in its world frame")
    parser.add_argument("--steps", type=positive_int, default=2500, help="optimiser steps")
    parser.add_argument("--batch", type=positive_int, default=16, help="queries per step")
    parser.add_argument("--lr", type=positive_float, default=d.lr, help="peak learning rate")
    parser.add_argument("--image-size", type=positive_int, default=d.encoder.image_size, help="network input width (px)")
    parser.add_argument("--seed", type=int, default=d.seed, help="training seed (the benchmark's frames use 1000+)")
    parser.add_argument("--device", default=d.device, choices=DEVICES, help="where to train")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.epilog = "example: python -m rayemb_ros.cli.fixed_landmark --out w.pt --steps 2500 --batch 16 --device cuda"
    args = parser.parse_args(argv)
    config = TrainConfig(
        volumes=(args.volume,), steps=args.steps, batch=args.batch, lr=args.lr, seed=args.seed, device=args.device,
        landmark_pool=len(LANDMARKS),  # PairSampler's random-point pool is not used here
        encoder=EncoderConfig(embed_dim=len(LANDMARKS), image_size=args.image_size),
    )
    summary = train(config, args.out, progress=not args.no_progress)
    print(f"wrote {args.out}: {summary['steps']} steps, validation localisation error {summary['val_px_median']:.2f} px")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
