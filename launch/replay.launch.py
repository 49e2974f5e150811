"""`ros2 launch rayemb_ros replay.launch.py bag:=BAG [volume:=CT] [params_file:=FILE] [rate:=R]
[rviz:=true]`: a recorded bag played into the node, to watch an evaluation on a ROS install.

The node starts on the bag's clock (use_sim_time); `ros2 service call` loads the volume
through ~/load_volume, and when that call returns, `ros2 bag play BAG --clock --rate R` plays
the bag. With rviz:=true the bag's /carm/pose_gt is drawn beside the estimated pose. A load
that fails is answered with success: false and the node drops the frames (see its log).
Needs ros2bag (and rviz2 for rviz:=true). The numbers (mTRE, GFR, latency) come from
`rayemb replay BAG --volume CT --out DIR --via-node`, which plays the same bag through the
same node and scores every estimate.
"""

from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction, RegisterEventHandler
from launch.event_handlers import OnProcessExit
from launch_ros.actions import Node

from rayemb_ros.ros import launch_args


def start(context: LaunchContext, share: Path) -> list:
    values = context.launch_configurations
    load = ExecuteProcess(cmd=launch_args.load_volume_command(values["volume"]), output="screen")
    play = ExecuteProcess(cmd=launch_args.bag_play_command(values["bag"], values["rate"]), output="screen")
    actions = [
        Node(**launch_args.replay_node(values), output="screen", emulate_tty=True),
        load,
        # The bag starts only once the volume is loaded: frames before it would be dropped.
        RegisterEventHandler(OnProcessExit(target_action=load, on_exit=[play])),
    ]
    if launch_args.flag(values, "rviz"):
        actions.append(Node(**launch_args.rviz(share, "", use_sim_time=True)))
    return actions


def generate_launch_description() -> LaunchDescription:
    share = Path(get_package_share_directory(launch_args.PACKAGE))
    return LaunchDescription([
        *(DeclareLaunchArgument(a.name, default_value=a.default, description=a.description)
          for a in launch_args.replay_arguments(share)),
        OpaqueFunction(function=start, args=[share]),
    ])
