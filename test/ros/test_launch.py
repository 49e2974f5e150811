"""launch/rayemb.launch.py starts what exists: its package, executable and config.

launch_ros has no PyPI wheel, so the launch file is checked by reading it here; on a ROS 2
install (launch_ros importable, rayemb_ros built and sourced) it is also run for real.
"""

import ast
import os
import re
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from importlib.util import find_spec
from pathlib import Path

import pytest

from rosutil import REPO, Domain, Graph, wait_until

LAUNCH = REPO / "launch" / "rayemb.launch.py"
# What `ros2 launch` does, with the launch API alone (the ros2 CLI may be absent).
RUN_LAUNCH = """
import sys
from launch import LaunchService
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
service = LaunchService()
service.include_launch_description(IncludeLaunchDescription(PythonLaunchDescriptionSource(sys.argv[1])))
sys.exit(service.run())
"""


def calls(name: str) -> list[ast.Call]:
    """The calls of ``name`` in the launch file."""
    tree = ast.parse(LAUNCH.read_text())
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == name]


def literal_arguments(call: ast.Call) -> tuple[list[object], dict[str, object]]:
    args = [a.value for a in call.args if isinstance(a, ast.Constant)]
    return args, {kw.arg: kw.value.value for kw in call.keywords if isinstance(kw.value, ast.Constant)}


def test_launch_file_refers_to_what_the_package_installs():
    (node_call,) = calls("Node")
    _, node = literal_arguments(node_call)
    package = ET.parse(REPO / "package.xml").getroot().findtext("name")
    assert node["package"] == package == "rayemb_ros"
    assert node["name"] == "rayemb_node"
    script = REPO / "scripts" / node["executable"]
    assert script.is_file() and os.access(script, os.X_OK)
    cmake = (REPO / "CMakeLists.txt").read_text()
    assert re.search(rf"install\(PROGRAMS[^)]*scripts/{node['executable']}[^)]*DESTINATION lib/\$\{{PROJECT_NAME\}}", cmake)
    assert re.search(r"install\(DIRECTORY launch config DESTINATION share/\$\{PROJECT_NAME\}\)", cmake)
    # The params file is a launch argument whose default is the installed config/rayemb.yaml.
    (declare,) = calls("DeclareLaunchArgument")
    assert literal_arguments(declare)[0] == ["params_file"]
    assert [literal_arguments(c)[0] for c in calls("LaunchConfiguration")] == [["params_file"]]
    assert '"config" / "rayemb.yaml"' in LAUNCH.read_text() and (REPO / "config" / "rayemb.yaml").is_file()


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
    domain = Domain.random()
    with open(tmp_path / "launch.log", "wb") as log:
        launch = subprocess.Popen([sys.executable, "-c", RUN_LAUNCH, str(launch_file)], env=domain.env(), stdout=log,
                                  stderr=subprocess.STDOUT)
    graph = Graph(domain)
    try:
        wait_until(lambda: "rayemb_node" in graph.node.get_node_names(), 60, "rayemb_node on the graph")
    finally:
        graph.close()
        launch.send_signal(signal.SIGINT)
        launch.wait(30)
