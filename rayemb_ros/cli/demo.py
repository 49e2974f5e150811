"""`rayemb demo --out DIR` (what `make demo` runs): the bundled CT -> a simulated bag -> the
node over DDS -> report and summary (:mod:`rayemb_ros.ros.demo`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rayemb_ros.cli.arguments import at_least, output_path, positive_int

from rayemb_ros.params import DEVICES, Params

# The demo's default recipe.
FRAMES = 16
SEED = 2026  # fixed: the same bag, hence comparable numbers, on every machine
SIZE = 256  # pixels, square (the estimator's accuracy targets are quoted at 256 px)
STREAM_FRAMES = 30  # 2 s of an orbit at 15 fps


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=output_path, default=Path("out/demo"),
                        help="folder for the bag, estimates, metrics, report and the node's log")
    parser.add_argument("--frames", type=positive_int, default=FRAMES, help="simulated frames")
    parser.add_argument("--seed", type=int, default=SEED, help="seed of the simulated bag")
    parser.add_argument("--size", type=at_least(32), default=SIZE, help="image width and height (px)")
    parser.add_argument("--refine", action=argparse.BooleanOptionalAction, default=Params.refine,
                        help="intensity-based refinement after PnP")
    parser.add_argument("--device", choices=DEVICES, default="auto", help="the node's device")
    parser.add_argument("--stream-frames", type=int, default=STREAM_FRAMES, metavar="N",
                        help="frames of the orbit streamed to the node at 15 fps afterwards (0: no stream)")
    parser.epilog = "example: rayemb demo --out out/demo   (what `make demo` runs)"


def run(args: argparse.Namespace) -> int:
    from rayemb_ros.ros.demo import run_demo, run_stream  # rclpy: only when the demo runs

    params = Params(device=args.device, refine=args.refine).validated()
    result = run_demo(args.out, args.frames, args.seed, args.size, params)
    stream = run_stream(args.out / "stream", args.stream_frames, args.seed, args.size, params) if args.stream_frames else None
    print(f"\nrayemb demo: the bundled CT, {args.frames} simulated frames ({args.size} px, seed {args.seed}), "
          "registered by `rayemb node` over DDS")
    print(result.summary())
    if stream is not None:
        print(f"\nlive: an orbit of {args.stream_frames} frames at 15 fps (seed {args.seed}), streamed to a fresh node "
              f"(refinement off, the video-rate setting; {args.out / 'stream' / 'stream.json'})")
        print(stream.summary())
    return 0
