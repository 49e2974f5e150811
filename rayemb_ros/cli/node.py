"""`rayemb node [--params-file FILE] [--ros-args ...]`: the ROS 2 registration node
(:mod:`rayemb_ros.ros.node`), the same code as `ros2 run rayemb_ros rayemb_node`."""

from __future__ import annotations

import argparse

from rayemb_ros.cli.arguments import existing_path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params-file", type=existing_path,
                        help="ROS 2 parameter file (none: the package's config/rayemb.yaml)")
    parser.epilog = ("Arguments from --ros-args on go to ROS.\n"
                     "example: rayemb node --ros-args -p device:=cpu -p volume:=example -r __ns:=/or1")


def run(args: argparse.Namespace) -> int:
    from rayemb_ros.ros.node import NODE_NAME, default_params_file, main  # rclpy: only for the node

    params_file = args.params_file or default_params_file()
    return main([NODE_NAME, "--ros-args", "--params-file", str(params_file), *args.ros_args])
