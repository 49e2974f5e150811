"""`ros2 launch rayemb_ros rayemb.launch.py [ARG:=VALUE ...]`: the registration node.

Arguments (`ros2 launch rayemb_ros rayemb.launch.py --show-args`): namespace, image_topic,
camera_info_topic, params_file, use_sim_time, rviz (needs rviz2) and one override per node
parameter, e.g. `refine:=false device:=cpu`. What they become: rayemb_ros/ros/launch_args.py.
"""

from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch_ros.actions import Node

from rayemb_ros.ros import launch_args


def start(context: LaunchContext, share: Path) -> list[Node]:
    values = context.launch_configurations
    actions = [Node(**launch_args.node(values), output="screen", emulate_tty=True)]
    if launch_args.flag(values, "rviz"):
        actions.append(Node(**launch_args.rviz(share, values["namespace"], launch_args.flag(values, "use_sim_time"))))
    return actions


def generate_launch_description() -> LaunchDescription:
    share = Path(get_package_share_directory(launch_args.PACKAGE))
    return LaunchDescription([
        *(DeclareLaunchArgument(a.name, default_value=a.default, description=a.description)
          for a in launch_args.node_arguments(share)),
        OpaqueFunction(function=start, args=[share]),
    ])
