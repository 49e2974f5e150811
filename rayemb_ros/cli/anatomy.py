"""`rayemb anatomy --volume CT --out DIR --seed S [--mirror] [--metal]`: a new patient made from
a CT (:mod:`rayemb_ros.imaging.anatomy`): DIR/ct.nii.gz, DIR/labels.nii.gz when the source has
a label map, and DIR/anatomy.json (the recipe, and where the source CT's centre went)."""

from __future__ import annotations

import argparse
import json

import numpy as np

from rayemb_ros.cli.arguments import existing_path, output_path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--volume", required=True,
                        help="source CT: NIfTI, NRRD, DICOM folder, or 'example' (the bundled CT, with its label map)")
    parser.add_argument("--out", required=True, type=output_path, help="folder to write the new patient into (created)")
    parser.add_argument("--seed", required=True, type=int, help="the patient's seed: the same seed makes the same patient")
    parser.add_argument("--mirror", action="store_true",
                        help="mirror left-right as well (an anatomy never seen: for evaluation, never for training)")
    parser.add_argument("--metal", action="store_true", help="add screws and plates in the bone")
    parser.add_argument("--labels", type=existing_path,
                        help="the source's label map (NIfTI on its grid); 'example' has its own")
    parser.epilog = "example: rayemb anatomy --volume example --out out/patient_7 --seed 7 --metal"


def run(args: argparse.Namespace) -> int:
    from rayemb_ros.geometry.volume import example_labels_path, load_labels, load_volume, save_nifti
    from rayemb_ros.imaging.anatomy import make_variant

    source = load_volume(args.volume)
    labels_path = args.labels or (example_labels_path() if args.volume == "example" else None)
    labels = load_labels(labels_path, source) if labels_path else None
    variant = make_variant(source, args.seed, mirror=args.mirror, metal=args.metal, labels=labels)
    # whole HU as int16, as scanners store them: a quarter of the float32 file
    save_nifti(args.out / "ct.nii.gz", np.round(variant.volume.hu).astype(np.int16), variant.volume.affine)
    if variant.labels is not None:
        save_nifti(args.out / "labels.nii.gz", variant.labels, variant.volume.affine)
    record = {"source": args.volume, "recipe": variant.recipe.as_dict(),
              "source_centre_mm": source.center.tolist(), "centre_in_variant_mm": variant.carry(source.center[None])[0].tolist()}
    (args.out / "anatomy.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out / 'ct.nii.gz'} ({'x'.join(map(str, variant.volume.shape))} voxels, seed {args.seed}"
          f"{', mirrored' if args.mirror else ''}{', metal' if args.metal else ''})"
          + (f" and {args.out / 'labels.nii.gz'}" if variant.labels is not None else ""))
    return 0
