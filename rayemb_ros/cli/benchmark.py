"""`rayemb benchmark --out DIR`: the paper's table, RayEmb against its baselines
(:mod:`rayemb_ros.evaluation.benchmark`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rayemb_ros.evaluation.benchmark import DATASETS, BenchmarkConfig, BenchmarkError, run_benchmark
from rayemb_ros.evaluation.units import mm
from rayemb_ros.geometry.volume import VolumeError
from rayemb_ros.params import DEVICES, Params


def print_table(name: str, result: dict, device: str, threads: int) -> None:
    print(f"\n{name}: {result['description']}")
    print(f"{result['frames']} frames, {result['image_hw'][1]}x{result['image_hw'][0]} px, {device} "
          f"({threads} threads); initial poses of 'intensity': median mTRE {mm(result['initial_mtre_mm']['p50'])}")
    print(f"{'method':<16}{'mTRE p25':>9}{'p50':>8}{'p95':>8}{'GFR@10':>8}{'GFR@5':>7}{'ok':>6}"
          f"{'lat p50':>9}{'p95 ms':>8}")
    for method, s in result["methods"].items():
        if not s["available"]:
            print(f"{method:<16}  n/a: {s['reason']}")
            continue
        m, g, lat = s["mtre_mm"], s["gfr_percent"], s["latency_ms"]
        p25, p50, p95 = (mm(m[k], unit=False) for k in ("p25", "p50", "p95"))
        print(f"{method:<16}{p25:>9}{p50:>8}{p95:>8}{g['10']:>7.0f}%{g['5']:>6.0f}%"
              f"{100 * s['ok_fraction']:>5.0f}%{lat['p50']:>9.0f}{lat['p95']:>8.0f}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = BenchmarkConfig(out=Path("."))
    parser.add_argument("--out", required=True, type=Path, help="folder for benchmark.json")
    parser.add_argument("--device", default="auto", choices=DEVICES)
    parser.add_argument("--frames", type=int, default=d.frames,
                        help=f"frames per set (default {d.frames}; ~10 s per frame and set on 2 CPU cores; the first "
                             "run also renders and caches the sets, ~3 s per frame)")
    parser.add_argument("--width", type=int, default=d.width, help=f"frame width = height in px (default {d.width})")
    parser.add_argument("--seed", type=int, default=d.seed,
                        help=f"frames seed of the training CT's set (default {d.seed}; mirrored + 1000, region + 2000, "
                             "new patients + 3000, + 4000, ...)")
    parser.add_argument("--new-patients", type=int, nargs="*", default=list(d.new_patients), metavar="SEED",
                        help=f"anatomy seeds of the new-patient sets (default {' '.join(map(str, d.new_patients))})")
    parser.add_argument("--no-region", action="store_true", help="leave out the held-out-region set")
    parser.add_argument("--volume", default=d.volume,
                        help="CT of the simulated sets: 'example' (default) or a resampled copy of it in its "
                             "world frame (the fixed-landmark baseline's landmarks are the bundled CT's)")
    parser.add_argument("--intensity-steps", type=int, default=d.intensity_steps,
                        help=f"NCC steps of the intensity baseline (default {d.intensity_steps})")
    parser.add_argument("--refine-steps", type=int, default=d.params.refine_steps,
                        help=f"NCC steps after PnP in rayemb_refined (default {d.params.refine_steps})")
    parser.add_argument("--dataset", nargs=2, metavar=("NAME", "FILE"),
                        help="a real dataset instead of the simulated sets: deepfluoro ipcai_2020_full_res_data.h5")
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    dataset = None
    if args.dataset:
        name, file = args.dataset[0], Path(args.dataset[1])
        if name not in DATASETS:
            print(f"rayemb benchmark: error: unknown dataset {name!r} (have {', '.join(DATASETS)})", file=sys.stderr)
            return 2
        dataset = (name, file)
    if args.frames < 1 or args.width < 16:
        print("rayemb benchmark: error: --frames must be >= 1 and --width >= 16", file=sys.stderr)
        return 2
    config = BenchmarkConfig(
        out=args.out, volume=args.volume, frames=args.frames, width=args.width, seed=args.seed,
        new_patients=tuple(args.new_patients), region=not args.no_region,
        intensity_steps=args.intensity_steps, params=Params(device=args.device, refine_steps=args.refine_steps),
        dataset=dataset, progress=not args.no_progress,
    )
    try:
        report = run_benchmark(config, on_set=print_table)
    except (BenchmarkError, VolumeError) as exc:
        print(f"rayemb benchmark: error: {exc}", file=sys.stderr)
        return 2
    frames = sum(report["sets"][name]["frames"] for name in report["headline_sets"])
    print_table("headline", {"description": f"every frame of {', '.join(report['headline_sets'])}", "frames": frames,
                             "image_hw": [config.width, config.width], "initial_mtre_mm": {"p50": float("nan")},
                             "methods": report["methods"]}, report["device"], report["torch_threads"])
    print(f"\nwrote {args.out / 'benchmark.json'}")
    return 0
