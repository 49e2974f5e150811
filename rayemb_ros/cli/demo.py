"""`rayemb demo --out DIR` (what `make demo` runs): the bundled CT -> a simulated bag -> the
node over DDS -> report and summary (:mod:`rayemb_ros.ros.demo`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rayemb_ros.params import DEVICES, Params

# The demo's default recipe.
FRAMES = 16
SEED = 2026  # fixed: the same bag, hence comparable numbers, on every machine
SIZE = 256  # pixels, square (the estimator's accuracy targets are quoted at 256 px)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("out/demo"), help="output directory (default out/demo)")
    parser.add_argument("--frames", type=int, default=FRAMES, help=f"simulated frames (default {FRAMES})")
    parser.add_argument("--seed", type=int, default=SEED, help=f"seed of the simulated bag (default {SEED})")
    parser.add_argument("--size", type=int, default=SIZE, help=f"image width and height (default {SIZE})")
    parser.add_argument("--refine", action=argparse.BooleanOptionalAction, default=Params.refine,
                        help=f"intensity-based refinement after PnP (default {'on' if Params.refine else 'off'})")
    parser.add_argument("--device", choices=DEVICES, default="auto", help="the node's device (default auto)")


def run(args: argparse.Namespace) -> int:
    from rayemb_ros.evaluation.replay import ReplayError
    from rayemb_ros.ros.demo import run_demo  # rclpy: only when the demo runs

    if args.frames < 1 or args.size < 32:
        print("rayemb demo: error: --frames must be >= 1 and --size >= 32", file=sys.stderr)
        return 2
    params = Params(device=args.device, refine=args.refine).validated()
    try:
        result = run_demo(args.out, args.frames, args.seed, args.size, params)
    except ReplayError as exc:
        print(f"rayemb demo: error: {exc}", file=sys.stderr)
        return 1
    print(f"\nrayemb demo: the bundled CT, {args.frames} simulated frames ({args.size} px, seed {args.seed}), "
          "registered by `rayemb node` over DDS")
    print(result.summary())
    return 0
