"""`ros2 launch rayemb_ros rayemb.launch.py [params_file:=FILE]`: the registration node."""

from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description() -> LaunchDescription:
    default_params = Path(get_package_share_directory("rayemb_ros")) / "config" / "rayemb.yaml"
    return LaunchDescription([
        DeclareLaunchArgument(
            "params_file", default_value=str(default_params), description="ROS 2 parameter file of the node"
        ),
        Node(
            package="rayemb_ros",
            executable="rayemb_node",
            name="rayemb_node",
            parameters=[LaunchConfiguration("params_file")],
            output="screen",
            emulate_tty=True,
        ),
    ])
