"""`rayemb prepare --volume CT --out BUNDLE`: prepare a patient's CT before surgery and check it
(:mod:`rayemb_ros.evaluation.prepare`). Exit code 0 when the self-check passes, 1 when it does
not (the bundle is written either way: its poses are then advisory-grade), 2 for bad input."""

from __future__ import annotations

import argparse
import sys

from rayemb_ros.cli.arguments import non_negative_int, output_path, positive_int
from rayemb_ros.errors import InputError
from rayemb_ros.params import DEVICES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--volume", required=True, help="the patient's CT: NIfTI, NRRD, DICOM folder, or 'example'")
    parser.add_argument("--out", required=True, type=output_path, help="the bundle folder to write (replaced if there)")
    parser.add_argument("--checkpoint", default="", help="patient-agnostic encoder weights ('' = the shipped ones)")
    parser.add_argument("--finetune-steps", type=non_negative_int, default=0, metavar="N",
                        help="fine-tune the weights on this CT for N steps first (0 = no fine-tune)")
    parser.add_argument("--adapt-head-steps", type=non_negative_int, default=0, metavar="N",
                        help="instead of a fine-tune: adapt only the encoder's last layer to this CT, N steps on "
                             "features computed once (minutes on a CPU; docs/prepare.md says what it gives)")
    parser.add_argument("--device", choices=DEVICES, default="auto", help="where to fine-tune and register")
    parser.add_argument("--frames", type=positive_int, default=24, help="simulated frames of the self-check")
    parser.add_argument("--size", type=positive_int, default=256, help="self-check frame width = height (px)")
    parser.epilog = "example: rayemb prepare --volume patient_ct.nii.gz --out bundles/patient_0042"


def run(args: argparse.Namespace) -> int:
    from rayemb_ros.evaluation.prepare import PrepareConfig, prepare

    if args.finetune_steps and args.adapt_head_steps:
        raise InputError("--finetune-steps and --adapt-head-steps: one or the other")
    config = PrepareConfig(args.volume, args.out, args.checkpoint, args.finetune_steps, args.device,
                           args.frames, args.size, args.adapt_head_steps)
    record = prepare(config, log=lambda line: print(f"prepare: {line}", file=sys.stderr))
    c = record.self_check
    median = "no pose" if c.median_mm is None else f"{c.median_mm:.2f} mm"
    p95 = "no pose" if c.p95_mm is None else f"{c.p95_mm:.2f} mm"
    print(f"bundle: {args.out} (weights {record.weights_digest}, {record.finetune_steps} fine-tune steps)")
    print(f"self-check, {c.frames} simulated frames of this CT: median {median}, 95th {p95}, "
          f"GFR@10 {c.gfr10_percent:.1f} %, {c.refused} refused, {c.published_over_10mm} published > 10 mm")
    print(f"verdict: {c.verdict}; poses from this bundle: "
          + ("navigation-grade" if not record.grade_reasons else f"advisory-grade ({'; '.join(record.grade_reasons)})"))
    return 0 if c.passed else 1
