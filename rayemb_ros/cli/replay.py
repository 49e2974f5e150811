"""`rayemb replay BAG --volume CT --out DIR`: register every frame of a bag and evaluate
(:mod:`rayemb_ros.evaluation.replay`), in process or through `rayemb node` (``--via-node``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rayemb_ros.io.bags import IMAGE_TOPIC, INFO_TOPIC, POSE_TOPIC
from rayemb_ros.params import DEVICES, IMAGE_INTENSITIES, ParamError, Params


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bag", type=Path, help="rosbag2 directory (mcap or sqlite3)")
    parser.add_argument("--volume", required=True, help="CT: NIfTI, NRRD, DICOM folder, or 'example'")
    parser.add_argument("--out", required=True, type=Path, help="output directory (created)")
    parser.add_argument("--checkpoint", default="", help="encoder weights (default: the shipped checkpoint)")
    parser.add_argument("--image-intensity", choices=IMAGE_INTENSITIES, default="attenuation",
                        help="the bag's image intensity (default attenuation)")
    parser.add_argument("--refine", action=argparse.BooleanOptionalAction, default=Params.refine,
                        help=f"intensity-based refinement after PnP (default {'on' if Params.refine else 'off'})")
    parser.add_argument("--refine-steps", type=int, default=Params.refine_steps, metavar="N",
                        help=f"refinement steps (default {Params.refine_steps}; fewer: faster, tracking-grade poses)")
    parser.add_argument("--device", choices=DEVICES, default="auto", help="estimator device (default auto)")
    parser.add_argument("--via-node", action="store_true",
                        help="register through `rayemb node` in its own process over DDS")
    parser.add_argument("--image-topic", default=IMAGE_TOPIC, help=f"default {IMAGE_TOPIC}")
    parser.add_argument("--info-topic", default=INFO_TOPIC, help=f"default {INFO_TOPIC}")
    parser.add_argument("--pose-topic", default=POSE_TOPIC, help=f"ground truth; default {POSE_TOPIC}")


def check_bag(bag: Path, topics) -> None:
    """ParamError unless ``bag`` is a readable rosbag2 with images on ``topics.image``."""
    from rosbags.rosbag2 import Reader

    if not bag.is_dir():
        raise ParamError(f"no bag directory at {bag}")
    try:
        with Reader(bag) as reader:
            present = sorted({c.topic for c in reader.connections})
    except Exception as exc:  # rosbags raises several types for a folder that is not a bag
        raise ParamError(f"cannot read the bag {bag}: {exc}") from exc
    if topics.image not in present:
        raise ParamError(f"no topic {topics.image} in {bag} (its topics: {', '.join(present) or 'none'}); "
                         "see --image-topic")


def run(args: argparse.Namespace) -> int:
    from rayemb_ros.evaluation.replay import ReplayError, Topics, replay
    from rayemb_ros.geometry.volume import VolumeError

    topics = Topics(args.image_topic, args.info_topic, args.pose_topic)
    try:
        params = Params(device=args.device, checkpoint=args.checkpoint, image_intensity=args.image_intensity,
                        refine=args.refine, refine_steps=args.refine_steps).validated()
        check_bag(args.bag, topics)
        registration = None  # in process
        if args.via_node:
            from rayemb_ros.ros.bag_player import ThroughNode  # rclpy: only for this mode

            registration = ThroughNode()
        result = replay(args.bag, args.volume, args.out, params, topics, registration)
    except (ParamError, VolumeError, ReplayError) as exc:
        print(f"rayemb replay: error: {exc}", file=sys.stderr)
        return 2 if not isinstance(exc, ReplayError) else 1
    print(result.summary())
    return 0
