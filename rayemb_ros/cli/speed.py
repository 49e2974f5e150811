"""`rayemb speed`: time the pieces on this machine, stage by stage; prints a table and writes
``--out`` as JSON (:mod:`rayemb_ros.evaluation.speed`)."""

from __future__ import annotations

import argparse
import json

from rayemb_ros.cli.arguments import output_path, positive_int
from rayemb_ros.params import DEVICES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--volume", default="example", help="CT: NIfTI/NRRD file, DICOM folder, or 'example'")
    parser.add_argument("--device", default="auto", choices=DEVICES, help="where to time the pieces")
    parser.add_argument("--frames", type=positive_int, default=10, help="frames of 256 px timed through the estimator")
    parser.add_argument("--out", type=output_path, help="also write the numbers here as JSON")
    parser.epilog = "example: rayemb speed --frames 20 --out out/speed.json"


def run(args: argparse.Namespace) -> int:
    from rayemb_ros.evaluation.speed import measure  # torch: only when measuring
    from rayemb_ros.geometry.volume import volume_file

    volume_file(args.volume)

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
