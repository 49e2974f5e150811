"""`rayemb benchmark --out DIR`: the paper's table, RayEmb against its baselines
(:mod:`rayemb_ros.evaluation.benchmark`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rayemb_ros.cli.arguments import at_least, output_path, positive_int
from rayemb_ros.evaluation.benchmark import DATASETS, BenchmarkConfig, BenchmarkError, run_benchmark
from rayemb_ros.evaluation.units import mm
from rayemb_ros.params import DEVICES, Params


def print_table(name: str, result: dict, device: str, threads: int) -> None:
    """One set's results: mTRE over all frames (a refused frame is a failure: 'no pose')."""
    print(f"\n{name}: {result['description']}")
    start = result["initial_mtre_mm"]["p50"]
    print(f"{result['frames']} frames, {result['image_hw'][1]}x{result['image_hw'][0]} px, {device} ({threads} threads)"
          + ("" if start != start else f"; the intensity baseline starts {mm(start)} off (median)"))
    print(f"{'':<16}{'mTRE (mm): 25th':>16}{'median':>9}{'95th':>9}{'GFR@10':>8}{'GFR@5':>7}{'posed':>7}"
          f"{'latency (ms): median':>22}{'95th':>7}")
    for method, s in result["methods"].items():
        if not s["available"]:
            print(f"{method:<16}  n/a: {s['reason']}")
            continue
        m, g, lat = s["mtre_mm"], s["gfr_percent"], s["latency_ms"]
        p25, p50, p95 = (mm(m[k], unit=False) for k in ("p25", "p50", "p95"))
        print(f"{method:<16}{p25:>16}{p50:>9}{p95:>9}{g['10']:>7.0f}%{g['5']:>6.0f}%"
              f"{100 * s['ok_fraction']:>6.0f}%{lat['p50']:>22.0f}{lat['p95']:>7.0f}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = BenchmarkConfig(out=Path("."))
    parser.add_argument("--out", required=True, type=output_path, help="folder for benchmark.json")
    parser.add_argument("--device", default="auto", choices=DEVICES, help="where the methods run")
    parser.add_argument("--frames", type=positive_int, default=d.frames,
                        help="frames per set (~10 s per frame and set on 2 CPU cores; the first run also renders "
                             "and caches the sets, ~3 s per frame)")
    parser.add_argument("--width", type=at_least(16), default=d.width, help="frame width = height (px)")
    parser.add_argument("--seed", type=int, default=d.seed,
                        help="frames seed of the training CT's set (mirrored + 1000, region + 2000, new patients "
                             "+ 3000, + 4000, ...)")
    parser.add_argument("--new-patients", type=int, nargs="*", default=list(d.new_patients), metavar="SEED",
                        help="anatomy seeds of the new-patient sets")
    parser.add_argument("--no-region", action="store_true", help="leave out the held-out-region set")
    parser.add_argument("--no-sequence", action="store_true",
                        help="leave out the orbit sequence (tracked against frame by frame)")
    parser.add_argument("--no-operating-room", action="store_true",
                        help="leave out the training CT's cluttered and distorted sets")
    parser.add_argument("--volume", default=d.volume,
                        help="CT of the simulated sets: 'example' or a resampled copy of it in its world frame "
                             "(the fixed-landmark baseline's landmarks are the bundled CT's)")
    parser.add_argument("--intensity-steps", type=positive_int, default=d.intensity_steps,
                        help="NCC steps of the intensity baseline")
    parser.add_argument("--refine-steps", type=positive_int, default=d.params.refine_steps,
                        help="NCC steps after PnP in rayemb_refined")
    parser.add_argument("--dataset", nargs=2, metavar=("NAME", "FILE"),
                        help="a real dataset instead of the simulated sets: deepfluoro ipcai_2020_full_res_data.h5")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.epilog = "example: rayemb benchmark --out out/benchmark --frames 20"


def run(args: argparse.Namespace) -> int:
    from rayemb_ros.geometry.volume import volume_file

    dataset = None
    if args.dataset:
        name, file = args.dataset[0], Path(args.dataset[1])
        if name not in DATASETS:
            raise BenchmarkError(f"unknown dataset {name!r} (have {', '.join(DATASETS)})")
        dataset = (name, file)
    else:
        volume_file(args.volume)
    config = BenchmarkConfig(
        out=args.out, volume=args.volume, frames=args.frames, width=args.width, seed=args.seed,
        new_patients=tuple(args.new_patients), region=not args.no_region, operating_room=not args.no_operating_room,
        sequence=not args.no_sequence,
        intensity_steps=args.intensity_steps, params=Params(device=args.device, refine_steps=args.refine_steps),
        dataset=dataset, progress=not args.no_progress,
    )
    report = run_benchmark(config, on_set=print_table)
    frames = sum(report["sets"][name]["frames"] for name in report["headline_sets"])
    print_table("headline", {"description": f"every frame of {', '.join(report['headline_sets'])}", "frames": frames,
                             "image_hw": [config.width, config.width], "initial_mtre_mm": {"p50": float("nan")},
                             "methods": report["methods"]}, report["device"], report["torch_threads"])
    print(f"\nwrote {args.out / 'benchmark.json'}")
    return 0
