"""``rayemb simulate``: a bag of realistic fluoroscopy frames of a CT with exact ground truth.

Per frame: a C-arm pose and detector over the clinical range (``poses``), a DRR (``render``;
diffdrr by default, so that test frames never come from nanodrr, the training and template
renderer), a random acquisition style (``fluoro``), then the image, its CameraInfo and the
ground-truth pose into a rosbag2 bag (``bags``).

Geometry and noise draw from separate streams of the seed: ``plan`` alone reproduces the
ground truth of a bag, whatever the renderer or image settings.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from jaxtyping import Float

from rayemb_ros import fluoro
from rayemb_ros.bags import STORAGES, Frame, write_bag
from rayemb_ros.camera import Detector, project
from rayemb_ros.images import ENCODINGS
from rayemb_ros.params import IMAGE_INTENSITIES
from rayemb_ros.poses import sample_detector, sample_poses
from rayemb_ros.volume import Volume, VolumeError, load_volume, sample_landmarks

RENDERERS = ("diffdrr", "nanodrr")
# A fixed start keeps bags of one seed byte-identical; the frame period sets the replay rate.
START_NS = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z
SHEET_FRAMES = 12  # frames shown on a contact sheet


@dataclass(frozen=True)
class Shot:
    """What one simulated frame is: the ground truth (pose, detector) and the look (style)."""

    T_ct_source: Float[np.ndarray, "4 4"]  # mm
    detector: Detector
    style: fluoro.FluoroStyle


def _streams(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    geometry, noise = np.random.default_rng(seed).spawn(2)
    return geometry, noise


def plan(volume: Volume, frames: int, seed: int, height: int, width: int) -> list[Shot]:
    """The frames' poses, detectors and styles for a seed (deterministic)."""
    rng, _ = _streams(seed)
    poses = sample_poses(rng, frames, volume.center)
    return [Shot(T, sample_detector(rng, height, width), fluoro.sample_style(rng)) for T in poses]


def _line_integrals(volume: Volume, renderer: str) -> Callable[[Shot], Float[np.ndarray, "H W"]]:
    from rayemb_ros import render  # torch and the renderers load only when frames are made

    if renderer not in RENDERERS:
        raise ValueError(f"renderer must be one of {RENDERERS}, got {renderer!r}")
    drr = render.DiffdrrRenderer(volume) if renderer == "diffdrr" else render.NanoRenderer(volume)
    return lambda shot: drr.render_np(shot.T_ct_source[None], shot.detector)[0]


def simulate_frames(
    volume: Volume,
    shots: list[Shot],
    seed: int,
    renderer: str = "diffdrr",
    intensity: str = "attenuation",
    encoding: str = "mono16",
    fps: float = 10.0,
) -> Iterator[Frame]:
    """Render and degrade the planned shots one at a time (lazily: bags stream to disk)."""
    _, noise = _streams(seed)
    render_one = _line_integrals(volume, renderer)
    for i, shot in enumerate(shots):
        image = fluoro.apply(render_one(shot), shot.style, noise, intensity)
        yield Frame(
            stamp_ns=START_NS + round(i * 1e9 / fps),
            image=image,
            K=shot.detector.K,
            T_ct_source_gt=shot.T_ct_source,
            encoding=encoding,
        )


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
    from rayemb_ros.contact_sheet import save_contact_sheet

    X = sample_landmarks(volume, landmarks, seed=seed)
    save_contact_sheet(
        path,
        [f.image for f in frames],
        [project(f.K, f.T_ct_source_gt, X) for f in frames],
        titles=[f"frame {i}  fx {f.K[0, 0]:.0f} px" for i, f in enumerate(frames)],
    )
