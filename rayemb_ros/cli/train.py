"""`rayemb train`: train the ray-embedding encoder on one or more CTs (resumable, progress bar;
data-parallel under `torchrun --standalone --nproc_per_node N --no-python rayemb train ...`)."""

from __future__ import annotations

import argparse

from rayemb_ros.cli.arguments import existing_path, output_path, positive_float, positive_int, share
from rayemb_ros.learning.checkpoint import load_encoder
from rayemb_ros.learning.config import TrainConfig
from rayemb_ros.learning.model import EncoderConfig
from rayemb_ros.params import DEVICES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    parser.add_argument("--volume", action="append", default=[], metavar="CT",
                        help="a training CT (NIfTI/NRRD file, DICOM folder, or 'example'); repeat for more "
                             f"(none and no --volumes: {d.volumes[0]})")
    parser.add_argument("--volumes", type=existing_path, metavar="DIR", help="also every CT file and DICOM folder under DIR")
    parser.add_argument("--val-volume", action="append", default=[], metavar="CT",
                        help="a CT held out of training, validated on one by one (repeatable; none: the training "
                             "CTs at other poses)")
    parser.add_argument("--anatomy", action="store_true",
                        help="every batch a new patient made from its CT (deformed, resized, turned, cropped)")
    parser.add_argument("--holdout-below-mm", type=float, metavar="Z",
                        help="train on the CTs' slices above world height Z (mm) only, holding out the region below")
    parser.add_argument("--operating-room", type=share, default=d.operating_room, metavar="SHARE",
                        help="the share of queries made as an operating room makes them: up to 3 instruments, "
                             "low dose and a vendor display, each drawn per query; templates stay clean "
                             f"(default {d.operating_room})")
    parser.add_argument("--out", required=True, type=output_path, help="where to write the weights (.pt)")
    parser.add_argument("--steps", type=positive_int, default=d.steps, help="optimiser steps")
    parser.add_argument("--batch", type=positive_int, default=d.batch, help="queries per step (per rank)")
    parser.add_argument("--templates", type=positive_int, default=d.templates, help="template DRRs per query")
    parser.add_argument("--points", type=positive_int, default=d.points, help="3D points per query")
    parser.add_argument("--lr", type=positive_float, default=d.lr, help="peak learning rate")
    parser.add_argument("--tau", type=positive_float, default=d.tau, help="InfoNCE temperature")
    parser.add_argument("--warmup", type=positive_int, default=d.warmup, help="learning-rate warm-up steps")
    parser.add_argument("--init", default=d.init, help="start from these weights (fine-tuning); '' = from scratch")
    parser.add_argument("--seed", type=int, default=d.seed, help="seed of every batch, CT draw and new patient")
    parser.add_argument("--image-size", type=positive_int, default=d.encoder.image_size,
                        help="encoder input width (px)")
    parser.add_argument("--val-every", type=positive_int, default=d.val_every, help="steps between validations")
    parser.add_argument("--ckpt-every", type=positive_int, default=d.ckpt_every,
                        help="steps between saves of the resumable training state")
    parser.add_argument("--max-cached-volumes", type=positive_int, default=d.max_cached_volumes,
                        help="prepared CTs kept in memory at once")
    parser.add_argument("--device", default=d.device, choices=DEVICES, help="where to train")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.epilog = ("example: rayemb train --volume example --volume ct2.nii.gz --anatomy --operating-room 0.5 "
                     "--steps 2000 --out w.pt")


def run(args: argparse.Namespace) -> int:
    from rayemb_ros.geometry.volume import find_volumes, volume_file
    from rayemb_ros.learning.train import train  # torch and the renderer: only when training

    volumes = tuple(args.volume) + (tuple(find_volumes(args.volumes)) if args.volumes else ())
    for spec in volumes + tuple(args.val_volume):  # every CT there before any training
        volume_file(spec)
    if args.init:
        load_encoder(args.init)
    config = TrainConfig(
        volumes=volumes or TrainConfig.volumes, val_volumes=tuple(args.val_volume), anatomy=args.anatomy,
        operating_room=args.operating_room, holdout_below_mm=args.holdout_below_mm,
        max_cached_volumes=args.max_cached_volumes,
        steps=args.steps, batch=args.batch, templates=args.templates, points=args.points, lr=args.lr,
        tau=args.tau, warmup=args.warmup, init=args.init, seed=args.seed, val_every=args.val_every,
        ckpt_every=args.ckpt_every, device=args.device, encoder=EncoderConfig(image_size=args.image_size),
    )
    summary = train(config, args.out, progress=not args.no_progress)
    per_volume = "".join(f"\n  {spec}: {px:.2f} px" for spec, px in summary["val_px_per_volume"].items())
    print(f"wrote {args.out}: {summary['steps']} steps, validation localisation error {summary['val_px_median']:.2f} px"
          + (f"; per validation CT:{per_volume}" if len(summary["val_px_per_volume"]) > 1 else ""))
    return 0
