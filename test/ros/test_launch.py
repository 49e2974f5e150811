"""The launch files, their RViz config and what they start.

launch_ros has no PyPI wheel, so here the launch files run against recording stand-ins of the
launch API, and what they declare and start is compared with rayemb_ros.ros.launch_args (the
one definition of the arguments) and with the node itself (its topics read from node.py). On
a ROS 2 install (launch_ros importable, rayemb_ros built and sourced) the launch also runs
for real.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import types
import xml.etree.ElementTree as ET
from dataclasses import fields
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from rayemb_ros.io.bags import POSE_TOPIC
from rayemb_ros.params import Params
from rayemb_ros.ros import launch_args
from rayemb_ros.ros.launch_args import LaunchArgumentError
from rayemb_ros.ros.node import NODE_NAME
from rosutil import REPO, Domain, Graph, wait_until

NODE_SOURCE = REPO / "rayemb_ros" / "ros" / "node.py"
RVIZ_CONFIG = REPO / launch_args.RVIZ_CONFIG
# The checkout stands in for the installed share directory: CMakeLists.txt installs its
# launch/ and config/ there as they are.
SHARE = REPO
# What `ros2 launch FILE NAME:=VALUE ...` does, with the launch API alone (the ros2 CLI may be absent).
RUN_LAUNCH = """
import sys
from launch import LaunchService
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
arguments = [tuple(a.split(":=", 1)) for a in sys.argv[2:]]
service = LaunchService()
service.include_launch_description(
    IncludeLaunchDescription(PythonLaunchDescriptionSource(sys.argv[1]), launch_arguments=arguments))
sys.exit(service.run())
"""


# --- the node, read from its source ---

def node_names(method: str) -> list[str]:
    """The names the node passes to ``self.<method>(Type, name, ...)``, ``~/`` resolved as for
    a node in the root namespace."""
    tree = ast.parse(NODE_SOURCE.read_text())
    names = [call.args[1].value for call in ast.walk(tree)
             if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == method]
    return [f"/{NODE_NAME}/{name[2:]}" if name.startswith("~/") else name for name in names]


def test_the_source_reader_sees_the_node():
    assert "/tf" in node_names("create_publisher") and f"/{NODE_NAME}/pose" in node_names("create_publisher")
    assert node_names("create_service") == [f"/{NODE_NAME}/load_volume"]


# --- the launch files, run against stand-ins of the launch API ---

class Entity:
    """A launch entity as the launch file constructed it."""

    def __init__(self, *args: Any, **kwargs: Any):
        self.args, self.kwargs = args, kwargs


STAND_INS = {
    "launch": ("LaunchContext", "LaunchDescription"),
    "launch.actions": ("DeclareLaunchArgument", "ExecuteProcess", "OpaqueFunction", "RegisterEventHandler"),
    "launch.event_handlers": ("OnProcessExit",),
    "launch_ros": (),
    "launch_ros.actions": ("Node",),
}


def kind(entity: Entity) -> str:
    return type(entity).__name__


class Launch:
    """A launch file's description, built with the stand-ins."""

    def __init__(self, file: str):
        spec = importlib.util.spec_from_file_location(file.replace(".", "_"), REPO / "launch" / file)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        (entities,) = module.generate_launch_description().args
        self.declared = [e for e in entities if kind(e) == "DeclareLaunchArgument"]
        (self.opaque,) = [e for e in entities if kind(e) == "OpaqueFunction"]
        assert len(entities) == len(self.declared) + 1, f"{file}: more than its arguments and one OpaqueFunction"
        self.defaults = {d.args[0]: d.kwargs["default_value"] for d in self.declared}

    def start(self, **given: str) -> list[Entity]:
        """The actions for ``NAME:=VALUE`` arguments, as `ros2 launch` would get them."""
        assert set(given) <= set(self.defaults), f"not declared: {set(given) - set(self.defaults)}"
        values = {**self.defaults, **given}
        missing = sorted(name for name, value in values.items() if value is None)
        if missing:  # `ros2 launch` refuses these before running anything
            raise LookupError(f"required launch arguments not given: {missing}")
        context = types.SimpleNamespace(launch_configurations=values)
        return self.opaque.kwargs["function"](context, *self.opaque.kwargs.get("args", []))


@pytest.fixture
def launch(monkeypatch) -> Callable[[str], Launch]:
    """Loads a launch file with the launch API and ament index replaced by stand-ins."""
    for module, names in STAND_INS.items():
        stub = types.ModuleType(module)
        for name in names:
            setattr(stub, name, type(name, (Entity,), {}))
        monkeypatch.setitem(sys.modules, module, stub)
    packages = types.ModuleType("ament_index_python.packages")
    packages.get_package_share_directory = {launch_args.PACKAGE: str(SHARE)}.__getitem__
    monkeypatch.setitem(sys.modules, "ament_index_python.packages", packages)
    return Launch


@pytest.mark.parametrize("file, arguments", [("rayemb.launch.py", launch_args.node_arguments),
                                             ("replay.launch.py", launch_args.replay_arguments)])
def test_launch_files_declare_exactly_the_arguments_of_launch_args(launch, file, arguments):
    expected = arguments(SHARE)
    assert [(d.args[0], d.kwargs["default_value"], d.kwargs["description"]) for d in launch(file).declared] == \
        [(a.name, a.default, a.description) for a in expected]
    assert len({a.name for a in expected}) == len(expected), "two arguments share a name"
    params_file = {a.name: a.default for a in expected}["params_file"]
    assert params_file == str(SHARE / "config" / "rayemb.yaml") and Path(params_file).is_file()


def test_rayemb_launch_starts_the_node_with_its_defaults(launch):
    rayemb = launch("rayemb.launch.py")
    (node,) = rayemb.start()
    assert kind(node) == "Node"
    assert node.kwargs == {**launch_args.node(rayemb.defaults), "output": "screen", "emulate_tty": True}
    assert node.kwargs["namespace"] == ""
    assert node.kwargs["parameters"] == [str(SHARE / "config" / "rayemb.yaml"), {"use_sim_time": False}]


def test_rayemb_launch_with_every_kind_of_argument(launch):
    node, rviz = launch("rayemb.launch.py").start(namespace="or2", image_topic="/fluoro/image",
                                                  camera_info_topic="/fluoro/camera_info", use_sim_time="true",
                                                  rviz="true", refine="false", device="cpu")
    assert node.kwargs["name"] == NODE_NAME and node.kwargs["namespace"] == "or2"
    assert node.kwargs["remappings"] == [("/carm/image", "/fluoro/image"), ("/carm/camera_info", "/fluoro/camera_info")]
    assert node.kwargs["parameters"] == [str(SHARE / "config" / "rayemb.yaml"),
                                         {"refine": False, "device": "cpu", "use_sim_time": True}]
    assert kind(rviz) == "Node" and rviz.kwargs["executable"] == "rviz2"
    assert rviz.kwargs["arguments"] == ["-d", str(RVIZ_CONFIG)]
    assert rviz.kwargs["parameters"] == [{"use_sim_time": True}]
    # The config names the node's topics in the root namespace: RViz gets them remapped.
    assert dict(rviz.kwargs["remappings"]) == {f"/{NODE_NAME}/{t}": f"/or2/{NODE_NAME}/{t}"
                                               for t in ("markers", "pose", "overlay")}


def test_rviz_in_the_root_namespace_needs_no_remapping():
    assert launch_args.rviz(SHARE, "", use_sim_time=False)["remappings"] == []
    assert dict(launch_args.rviz(SHARE, "/a/b/", use_sim_time=False)["remappings"])[f"/{NODE_NAME}/pose"] == \
        f"/a/b/{NODE_NAME}/pose"


def test_replay_launch_loads_the_volume_then_plays_the_bag(launch, tmp_path):
    replay = launch("replay.launch.py")
    with pytest.raises(LookupError, match="bag"):
        replay.start()
    node, load, handler = replay.start(bag="run.mcap", rate="2")
    assert kind(node) == "Node" and node.kwargs["name"] == NODE_NAME
    assert node.kwargs["parameters"][1] == {"use_sim_time": True}  # on the bag's /clock
    assert kind(load) == "ExecuteProcess" and load.kwargs["cmd"] == launch_args.load_volume_command("example")
    assert kind(handler) == "RegisterEventHandler"
    (on_exit,) = handler.args
    assert kind(on_exit) == "OnProcessExit" and on_exit.kwargs["target_action"] is load
    (play,) = on_exit.kwargs["on_exit"]
    assert kind(play) == "ExecuteProcess" and play.kwargs["cmd"] == ["ros2", "bag", "play", "run.mcap", "--clock",
                                                                      "--rate", "2.0"]
    actions = replay.start(bag="run.mcap", volume=str(tmp_path / "ct.nii.gz"), rviz="true")
    assert json.loads(actions[1].kwargs["cmd"][-1]) == {"path": str(tmp_path / "ct.nii.gz")}
    assert actions[-1].kwargs["executable"] == "rviz2" and actions[-1].kwargs["parameters"] == [{"use_sim_time": True}]


def test_launch_refers_to_what_the_package_installs():
    package = ET.parse(REPO / "package.xml").getroot().findtext("name")
    assert launch_args.PACKAGE == package == "rayemb_ros"
    assert launch_args.NODE_NAME == NODE_NAME
    script = REPO / "scripts" / launch_args.EXECUTABLE
    assert script.is_file() and os.access(script, os.X_OK)
    cmake = (REPO / "CMakeLists.txt").read_text()
    script_rule = rf"install\(PROGRAMS[^)]*scripts/{script.name}[^)]*DESTINATION lib/\$\{{PROJECT_NAME\}}"
    assert re.search(script_rule, cmake)
    assert re.search(r"install\(DIRECTORY launch config DESTINATION share/\$\{PROJECT_NAME\}\)", cmake)
    for relative in (launch_args.PARAMS_FILE, launch_args.RVIZ_CONFIG, "launch/rayemb.launch.py",
                     "launch/replay.launch.py"):
        assert (SHARE / relative).is_file(), relative


# --- launch_args: arguments -> the node's parameters, topics and the replay's commands ---

def node_values(**given: str) -> dict[str, str]:
    """rayemb.launch.py's argument values: its defaults, then ``given``."""
    return {**{a.name: a.default for a in launch_args.node_arguments(SHARE)}, **given}


def test_every_parameter_has_an_override_argument():
    overrides = launch_args.override_arguments()
    assert [a.name for a in overrides] == [f.name for f in fields(Params)]
    assert all(a.default == launch_args.NOT_OVERRIDDEN for a in overrides)


@pytest.mark.parametrize("name, text, value", [
    ("refine", "false", False), ("min_inliers", "30", 30), ("device", "cpu", "cpu"),
    ("ransac_threshold_px", "5", 5.0), ("volume_root", "~", "~"), ("ct_frame", "true", "true"),
])
def test_overrides_are_typed_as_their_parameters(name, text, value):
    (passed,) = [p for p in launch_args.node(node_values(**{name: text}))["parameters"] if isinstance(p, dict)]
    assert passed == {name: value, "use_sim_time": False} and type(passed[name]) is type(value)


@pytest.mark.parametrize("name, text", [
    ("min_inliers", "many"), ("num_keep", "0"), ("device", "gpu"), ("refine", "maybe"), ("refine_steps", "[1"),
    ("image_intensity", "raw"), ("checkpoint", "/no/such/weights.pt"),
])
def test_a_bad_override_stops_the_launch_with_one_message(name, text):
    with pytest.raises(LaunchArgumentError, match=name):
        launch_args.node(node_values(**{name: text}))


def test_overrides_are_checked_with_the_params_file(tmp_path):
    """num_keep:=1500 exceeds the default 1200 landmarks, not a params file's 2000."""
    params_file = tmp_path / "params.yaml"
    params_file.write_text("/**:\n  ros__parameters:\n    num_keep: 100\n"
                           "rayemb_node:\n  ros__parameters:\n    num_landmarks: 2000\n    use_sim_time: true\n"
                           "other_node:\n  ros__parameters:\n    num_landmarks: 10\n")
    assert launch_args.file_parameters(str(params_file)) == {"num_keep": 100, "num_landmarks": 2000}
    assert launch_args.overrides(node_values(params_file=str(params_file), num_keep="1500")) == {"num_keep": 1500}
    with pytest.raises(LaunchArgumentError, match="num_keep"):
        launch_args.overrides(node_values(num_keep="1500"))
    with pytest.raises(LaunchArgumentError, match="params_file"):
        launch_args.overrides(node_values(params_file=str(tmp_path / "missing.yaml")))


def test_the_shipped_params_file_passes_as_it_is():
    assert launch_args.overrides(node_values()) == {}
    assert launch_args.file_parameters(str(SHARE / launch_args.PARAMS_FILE)) == Params().as_dict()


@pytest.mark.parametrize("text, value", [("true", True), ("false", False), ("True", True), ("maybe", None),
                                         ("1", None), ("", None)])
def test_flags_are_true_or_false(text, value):
    if value is None:
        with pytest.raises(LaunchArgumentError, match="use_sim_time"):
            launch_args.flag({"use_sim_time": text}, "use_sim_time")
    else:
        assert launch_args.flag({"use_sim_time": text}, "use_sim_time") is value


def test_launch_remaps_exactly_the_topics_the_node_subscribes():
    """The node's own (~/) topics follow its namespace; the absolute ones are the arguments."""
    absolute = {name for name in node_names("create_subscription") if not name.startswith(f"/{NODE_NAME}/")}
    values = node_values()
    assert absolute == {values["image_topic"], values["camera_info_topic"]}
    assert {source for source, _ in launch_args.node(values)["remappings"]} == absolute


def test_load_volume_command_calls_the_node_service(tmp_path, monkeypatch):
    command = launch_args.load_volume_command("example")
    assert command[:3] == ["ros2", "service", "call"]
    assert [command[3]] == node_names("create_service")
    package, kind_, name = command[4].split("/")
    assert package == launch_args.PACKAGE and kind_ == "srv" and (REPO / "srv" / f"{name}.srv").is_file()
    request_fields = (REPO / "srv" / f"{name}.srv").read_text().split("---")[0]
    assert re.search(r"^string path$", request_fields, re.M)
    assert yaml.safe_load(command[5]) == {"path": "example"}
    # A relative path or one with spaces reaches the node as one absolute path.
    monkeypatch.chdir(tmp_path)
    request = launch_args.load_volume_command("my ct.nii.gz")[5]
    assert yaml.safe_load(request) == {"path": str(tmp_path / "my ct.nii.gz")}


@pytest.mark.parametrize("rate", ["0", "-1", "fast", "true", ""])
def test_bag_play_refuses_a_rate_that_cannot_play(rate):
    with pytest.raises(LaunchArgumentError, match="rate"):
        launch_args.bag_play_command("run.mcap", rate)


# --- the RViz config ---

def test_rviz_config_shows_what_the_node_publishes_in_ct():
    config = yaml.safe_load(RVIZ_CONFIG.read_text())
    manager = config["Visualization Manager"]
    assert manager["Global Options"]["Fixed Frame"] == Params().ct_frame == "ct"
    classes = {d["Class"] for d in manager["Displays"]}
    assert {f"rviz_default_plugins/{c}" for c in ("Grid", "TF", "MarkerArray", "Image", "Pose")} <= classes
    assert {"Panels", "Visualization Manager"} <= set(config) and "Views" in manager
    topics = launch_args.rviz_topics(RVIZ_CONFIG)
    published = set(node_names("create_publisher"))
    # Every topic is the node's, or the ground truth of a bag played by replay.launch.py.
    assert set(topics) <= published | {POSE_TOPIC}, set(topics) - published
    assert {f"/{NODE_NAME}/{t}" for t in ("markers", "overlay", "pose")} <= set(topics)


def test_rviz_topics_sees_groups_and_plain_names(tmp_path):
    config = tmp_path / "x.rviz"
    config.write_text(yaml.safe_dump({"Visualization Manager": {"Displays": [
        {"Class": "rviz_default_plugins/Grid"},
        {"Class": "rviz_common/Group", "Displays": [{"Topic": {"Value": "/a"}}, {"Topic": "/b"}]},
    ]}}))
    assert launch_args.rviz_topics(config) == ["/a", "/b"]


# --- the node itself ---

def test_node_script_runs_the_node_entry_point():
    """scripts/rayemb_node (what `ros2 run` starts) reaches rayemb_ros.ros.node.main."""
    script = (REPO / "scripts" / "rayemb_node").read_text()
    assert "from rayemb_ros.ros.node import main" in script
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "rayemb_node"), "--ros-args", "-p", "num_keep:=0"],
                            env=Domain.random().env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "num_keep must be > 0" in result.stderr


@pytest.mark.skipif(find_spec("launch_ros") is None, reason="launch_ros is not installable from PyPI; runs on a ROS 2 install")
def test_launch_for_real(tmp_path):
    from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

    try:
        get_package_share_directory("rayemb_ros")
    except PackageNotFoundError:
        pytest.skip("rayemb_ros is not built into the sourced ROS 2 environment (colcon build, then source it)")
    launch_file = Path(get_package_share_directory("rayemb_ros")) / "launch" / "rayemb.launch.py"
    arguments = ["namespace:=launch_test", "image_topic:=/launch_test/image", "refine:=false", "device:=cpu"]
    domain = Domain.random()
    with open(tmp_path / "launch.log", "wb") as log:
        launch = subprocess.Popen([sys.executable, "-c", RUN_LAUNCH, str(launch_file), *arguments], env=domain.env(),
                                  stdout=log, stderr=subprocess.STDOUT)
    graph = Graph(domain)
    try:
        wait_until(lambda: (NODE_NAME, "/launch_test") in graph.node.get_node_names_and_namespaces(), 60,
                   f"{NODE_NAME} in /launch_test on the graph")
        wait_until(lambda: {t for t, _ in graph.node.get_subscriber_names_and_types_by_node(NODE_NAME, "/launch_test")}
                   >= {"/launch_test/image", "/carm/camera_info"}, 30, "the remapped subscriptions")
    finally:
        graph.close()
        launch.send_signal(signal.SIGINT)
        launch.wait(30)
