"""`rayemb replay BAG --volume CT --out DIR`: register every frame of a bag and evaluate
(:mod:`rayemb_ros.evaluation.replay`), in process or through `rayemb node` (``--via-node``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rayemb_ros.cli.arguments import existing_path, output_path, positive_int
from rayemb_ros.io.bags import (
    IMAGE_TOPIC, IMAGE_TYPE, INFO_TOPIC, INFO_TYPE, POSE_TOPIC, POSE_TYPE, BagError, bag_topics,
)
from rayemb_ros.params import DEVICES, IMAGE_INTENSITIES, Params


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bag", type=existing_path, help="rosbag2 folder (mcap or sqlite3)")
    parser.add_argument("--volume", required=True,
                        help="CT: NIfTI, NRRD, DICOM folder, a prepared bundle (rayemb prepare), or 'example'")
    parser.add_argument("--out", required=True, type=output_path,
                        help="folder for estimates.jsonl, metrics.json and report.html (created)")
    parser.add_argument("--checkpoint", default="", help="encoder weights ('' = the shipped checkpoint)")
    parser.add_argument("--image-intensity", choices=IMAGE_INTENSITIES, default="attenuation",
                        help="the bag's image intensity: attenuation (brighter = denser) or transmission (raw)")
    parser.add_argument("--dewarp", type=existing_path, metavar="NPZ",
                        help="the camera's dewarp model (grid file; a simulated bag's BAG/dewarp.npz): frames are "
                             "undistorted with it before registration")
    parser.add_argument("--refine", action=argparse.BooleanOptionalAction, default=Params.refine,
                        help="intensity-based refinement after PnP")
    parser.add_argument("--refine-steps", type=positive_int, default=Params.refine_steps, metavar="N",
                        help="refinement steps (fewer: faster, advisory-grade poses)")
    parser.add_argument("--device", choices=DEVICES, default="auto", help="estimator device")
    parser.add_argument("--tracking", action="store_true",
                        help="register the frames in order, each from the last trusted pose when recent (live "
                             "fluoroscopy), and once more one by one from scratch, to compare on the same frames")
    parser.add_argument("--prior-topic", metavar="TOPIC",
                        help="with --tracking: poses from outside (geometry_msgs/PoseStamped in frame ct, e.g. the "
                             "C-arm's angle readout) that start tracking where no trusted pose is recent")
    parser.add_argument("--via-node", action="store_true",
                        help="register through `rayemb node` in its own process over DDS")
    parser.add_argument("--image-topic", default=IMAGE_TOPIC, help="the bag's sensor_msgs/Image topic")
    parser.add_argument("--info-topic", default=INFO_TOPIC, help="the bag's sensor_msgs/CameraInfo topic")
    parser.add_argument("--pose-topic", default=POSE_TOPIC,
                        help="the bag's ground truth (geometry_msgs/PoseStamped, T_ct_source in metres)")
    parser.epilog = "example: rayemb replay bags/orbit --volume example --out out/orbit --tracking"


def check_bag(bag: Path, image_topic: str, info_topic: str, pose_topic: str) -> None:
    """BagError unless ``bag`` has images and CameraInfos on the chosen topics; it names the
    topics of each type the bag has and the option that picks one. A missing ground-truth
    topic is said on stderr (the replay then has no accuracy)."""
    present = bag_topics(bag)

    def of(kind: str) -> str:
        found = sorted(t for t, msgtype in present.items() if msgtype == kind)
        return ", ".join(found) or "none"

    if not any(msgtype == IMAGE_TYPE for msgtype in present.values()):
        raise BagError(f"{bag} has no {IMAGE_TYPE} topic (its topics: {', '.join(sorted(present)) or 'none'})")
    if not any(msgtype == INFO_TYPE for msgtype in present.values()):
        raise BagError(f"{bag} has no {INFO_TYPE} topic: every image needs its K")
    for topic, kind, option in ((image_topic, IMAGE_TYPE, "--image-topic"), (info_topic, INFO_TYPE, "--info-topic")):
        if present.get(topic) != kind:
            raise BagError(f"no {kind} on {topic} in {bag}; its {kind} topics: {of(kind)} (pick one with {option})")
    if present.get(pose_topic) != POSE_TYPE:
        print(f"rayemb replay: no ground truth on {pose_topic} in {bag} (its {POSE_TYPE} topics: {of(POSE_TYPE)}; "
              "pick one with --pose-topic): no accuracy numbers", file=sys.stderr)


def outside_priors(args: argparse.Namespace, params: Params):
    """The bag's poses on ``--prior-topic`` in the ``ct`` frame; BagError when the option
    cannot work (no such topic, or not with --tracking and in process). Poses in another frame
    are ignored, as the node ignores them, and said on stderr."""
    from rayemb_ros.io.bags import read_poses

    if not args.tracking or args.via_node:
        raise BagError("--prior-topic needs --tracking, in process (not with --via-node)")
    kind = bag_topics(args.bag).get(args.prior_topic)
    if kind != POSE_TYPE:
        raise BagError(f"no {POSE_TYPE} on {args.prior_topic} in {args.bag}")
    poses = read_poses(args.bag, args.prior_topic)
    usable = [p for p in poses if p.frame_id == params.ct_frame]
    if len(usable) < len(poses):
        print(f"rayemb replay: {len(poses) - len(usable)} of {len(poses)} poses on {args.prior_topic} ignored: "
              f"frame_id is not {params.ct_frame!r}", file=sys.stderr)
    return usable


def run(args: argparse.Namespace) -> int:
    from rayemb_ros.estimation.bundle import ct_of
    from rayemb_ros.evaluation.replay import InProcess, Topics, replay
    from rayemb_ros.geometry.volume import volume_file
    from rayemb_ros.learning.checkpoint import load_encoder

    volume_file(ct_of(args.volume))  # the CT there, and the weights readable, before any work
    if args.checkpoint:
        load_encoder(args.checkpoint)
    params = Params(device=args.device, checkpoint=args.checkpoint, image_intensity=args.image_intensity,
                    dewarp=str(args.dewarp or ""), refine=args.refine, refine_steps=args.refine_steps,
                    tracking=args.tracking).validated()
    check_bag(args.bag, args.image_topic, args.info_topic, args.pose_topic)
    registration = None  # in process
    if args.prior_topic:
        registration = InProcess(outside_priors(args, params))
    if args.via_node:
        from rayemb_ros.ros.bag_player import ThroughNode  # rclpy: only for this mode

        registration = ThroughNode()
    result = replay(args.bag, args.volume, args.out, params, Topics(args.image_topic, args.info_topic,
                                                                    args.pose_topic), registration)
    print(result.summary())
    return 0
