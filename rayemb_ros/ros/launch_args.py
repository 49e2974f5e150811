"""What the launch files make of their arguments: the arguments themselves (names, defaults,
descriptions: defined here once), rayemb_node's and RViz's ``Node`` keyword arguments, and the
commands of the replay launch.

No ``launch`` import: launch_ros cannot be installed everywhere, and this module is what its
tests check there. ``launch/rayemb.launch.py`` and ``launch/replay.launch.py`` only declare
these arguments and hand their values to these functions in an OpaqueFunction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

import yaml

from rayemb_ros.errors import InputError
from rayemb_ros.params import ParamError, Params

PACKAGE = "rayemb_ros"
EXECUTABLE = "rayemb_node"
# rayemb_ros.ros.node.NODE_NAME (test_launch keeps the two equal): importing the node here
# would pull rclpy into every `ros2 launch`.
NODE_NAME = "rayemb_node"
# The input topics as the node names them; the launch remaps them to its arguments.
IMAGE_TOPIC = "/carm/image"
CAMERA_INFO_TOPIC = "/carm/camera_info"
# Under the package's share directory (CMakeLists.txt installs config/ and launch/ there).
PARAMS_FILE = "config/rayemb.yaml"
RVIZ_CONFIG = "config/rayemb.rviz"
LOAD_VOLUME_SERVICE = f"/{NODE_NAME}/load_volume"
LOAD_VOLUME_TYPE = f"{PACKAGE}/srv/LoadVolume"
# The value of a parameter-override argument nobody set: the params file decides.
NOT_OVERRIDDEN = ""


class LaunchArgumentError(InputError, ValueError):
    """A launch argument that cannot work: the launch stops with this message."""


@dataclass(frozen=True)
class Argument:
    name: str
    default: str | None  # None: the user must give it
    description: str


def node_arguments(share: Path) -> list[Argument]:
    """The arguments of rayemb.launch.py; ``share``: the package's share directory."""
    return [
        Argument("namespace", "", "namespace of rayemb_node (its ~/ topics and service move with it)"),
        Argument("image_topic", IMAGE_TOPIC, "sensor_msgs/Image topic of the fluoroscopy frames"),
        Argument("camera_info_topic", CAMERA_INFO_TOPIC, "sensor_msgs/CameraInfo topic of those frames"),
        _params_file_argument(share),
        Argument("use_sim_time", "false", "true: stamps and timers follow /clock (a bag played with --clock)"),
        _rviz_argument(),
        *override_arguments(),
    ]


def replay_arguments(share: Path) -> list[Argument]:
    """The arguments of replay.launch.py."""
    return [
        Argument("bag", None, "rosbag2 to play into the node (topics: /carm/image, /carm/camera_info, /carm/pose_gt)"),
        Argument("volume", "example", "CT to register against, loaded through ~/load_volume before the bag plays: "
                                      "a NIfTI/NRRD file, a DICOM folder or 'example'"),
        _params_file_argument(share),
        Argument("rate", "1.0", "playback rate of the bag (ros2 bag play --rate)"),
        _rviz_argument(),
    ]


def override_arguments() -> list[Argument]:
    """One argument per node parameter, e.g. ``refine:=false device:=cpu``."""
    return [
        Argument(f.name, NOT_OVERRIDDEN, f"override of parameter {f.name} (default {f.default!r}); "
                                         "'' = as params_file says")
        for f in fields(Params)
    ]


def _params_file_argument(share: Path) -> Argument:
    return Argument("params_file", str(share / PARAMS_FILE), "ROS 2 parameter file of rayemb_node")


def _rviz_argument() -> Argument:
    return Argument("rviz", "false", f"true: also start rviz2 with {RVIZ_CONFIG} (TF, markers, overlay, pose)")


def node(values: Mapping[str, str]) -> dict[str, Any]:
    """``launch_ros.actions.Node`` keyword arguments of rayemb_node from rayemb.launch.py's
    argument values."""
    return node_kwargs(
        values["params_file"],
        namespace=values["namespace"],
        image_topic=values["image_topic"],
        camera_info_topic=values["camera_info_topic"],
        overrides=overrides(values),
        use_sim_time=flag(values, "use_sim_time"),
    )


def replay_node(values: Mapping[str, str]) -> dict[str, Any]:
    """rayemb_node for replay.launch.py: default topics, on the bag's clock."""
    return node_kwargs(values["params_file"], use_sim_time=True)


def node_kwargs(params_file: str, *, namespace: str = "", image_topic: str = IMAGE_TOPIC,
                camera_info_topic: str = CAMERA_INFO_TOPIC, overrides: Mapping[str, Any] | None = None,
                use_sim_time: bool = False) -> dict[str, Any]:
    # Later entries of `parameters` win: the overrides beat the params file.
    return {
        "package": PACKAGE,
        "executable": EXECUTABLE,
        "name": NODE_NAME,
        "namespace": namespace,
        "remappings": [(IMAGE_TOPIC, image_topic), (CAMERA_INFO_TOPIC, camera_info_topic)],
        "parameters": [params_file, {**(overrides or {}), "use_sim_time": use_sim_time}],
    }


def overrides(values: Mapping[str, str]) -> dict[str, Any]:
    """The parameter overrides that were given (value not ''), typed as their Params fields.

    They are checked together with the params file, as the node will combine them, so that a
    bad value stops the launch with one message instead of a node that dies at start (and a
    value fine with the file's other parameters is not refused against the defaults).
    """
    given = {f.name: _typed(f.default, values[f.name]) for f in fields(Params)
             if values.get(f.name, NOT_OVERRIDDEN) != NOT_OVERRIDDEN}
    try:
        params = Params.from_mapping({**file_parameters(values["params_file"]), **given})
    except ParamError as exc:
        raise LaunchArgumentError(f"bad parameter (params_file {values['params_file']} with overrides "
                                  f"{sorted(given)}): {exc}") from exc
    return {name: getattr(params, name) for name in given}


def _typed(default: Any, text: str) -> Any:
    """A launch argument's text as the value a parameter of ``default``'s type gets."""
    if isinstance(default, str):
        return text  # as written: YAML would turn volume_root:=~ into None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text  # not YAML: Params refuses it by name and type


def file_parameters(path: str) -> dict[str, Any]:
    """rayemb_node's Params values in a ROS 2 parameter file: its sections for every node
    (``/**``) or this node by name, in file order as ROS applies them."""
    try:
        sections = yaml.safe_load(Path(path).expanduser().read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise LaunchArgumentError(f"params_file {path}: {exc}") from exc
    merged: dict[str, Any] = {}
    for key, section in sections.items():
        if str(key).split("/")[-1] in (NODE_NAME, "*", "**"):
            merged.update((section or {}).get("ros__parameters", {}))
    # Other names (use_sim_time, qos_overrides, misspellings) are the node's to accept or refuse.
    return {name: value for name, value in merged.items() if name in Params.__dataclass_fields__}


def flag(values: Mapping[str, str], name: str) -> bool:
    """A true/false launch argument."""
    value = _typed(False, values[name])
    if not isinstance(value, bool):
        raise LaunchArgumentError(f"{name} must be true or false, got {values[name]!r}")
    return value


def load_volume_command(volume: str) -> list[str]:
    """`ros2 service call` of the node's ~/load_volume (it waits for the service to appear)."""
    # An absolute path, whatever the node's working directory; JSON is valid YAML and quotes
    # any path.
    path = volume if volume == "example" else str(Path(volume).expanduser().resolve())
    return ["ros2", "service", "call", LOAD_VOLUME_SERVICE, LOAD_VOLUME_TYPE, json.dumps({"path": path})]


def bag_play_command(bag: str, rate: str) -> list[str]:
    """`ros2 bag play` of ``bag``, publishing its time on /clock for the node's sim time."""
    value = _typed(0.0, rate)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise LaunchArgumentError(f"rate must be a positive number, got {rate!r}")
    return ["ros2", "bag", "play", bag, "--clock", "--rate", str(float(value))]


def rviz(share: Path, namespace: str, use_sim_time: bool) -> dict[str, Any]:
    """``Node`` keyword arguments of rviz2 with the shipped config.

    The config names the node's topics in the root namespace (/rayemb_node/...); a node in a
    namespace gets them remapped, since RViz does not resolve its displays' topics."""
    config = share / RVIZ_CONFIG
    prefix = "/" + namespace.strip("/") if namespace.strip("/") else ""
    own = [t for t in rviz_topics(config) if t.startswith(f"/{NODE_NAME}/")]
    return {
        "package": "rviz2",
        "executable": "rviz2",
        "arguments": ["-d", str(config)],
        "remappings": [(topic, prefix + topic) for topic in own] if prefix else [],
        "parameters": [{"use_sim_time": use_sim_time}],
    }


def rviz_topics(config: Path) -> list[str]:
    """The topics an RViz2 config's displays subscribe to."""
    return _display_topics(yaml.safe_load(config.read_text())["Visualization Manager"]["Displays"])


def _display_topics(displays: list[dict[str, Any]]) -> list[str]:
    topics = []
    for display in displays:
        topic = display.get("Topic")
        if topic is not None:  # {Value: /x, Depth: ...} in RViz2; a plain name in older files
            topics.append(topic["Value"] if isinstance(topic, dict) else topic)
        topics += _display_topics(display.get("Displays", []))  # a display group
    return topics
