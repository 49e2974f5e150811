"""The package builds the way ROS users build it: `colcon build` in a workspace (against the
ROS wheels of the venv), and the generated messages import from the result."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rosutil import REPO

# What a ROS workspace needs of the repository (no venv, no build outputs).
PACKAGE_PATHS = ["CMakeLists.txt", "package.xml", "setup.py", "msg", "srv", "rayemb_ros", "scripts", "launch", "config"]
VENV = Path(sys.prefix)

CHECK_INSTALL = """
import sys
from pathlib import Path
from rclpy.serialization import deserialize_message, serialize_message
import rayemb_ros
from rayemb_ros.msg import Landmark, LandmarkArray
from rayemb_ros.srv import LoadVolume
install = Path(sys.argv[1]).resolve()
for module in (rayemb_ros, sys.modules["rayemb_ros.msg"], sys.modules["rayemb_ros.srv"]):
    assert install in Path(module.__file__).resolve().parents, (module.__name__, module.__file__)
msg = LandmarkArray(landmarks=[Landmark(u=1.5, v=2.5, score=0.5, inlier=True)])
assert deserialize_message(serialize_message(msg), LandmarkArray) == msg
assert LoadVolume.Request(path="example").path == "example"
import rayemb_ros.ros.node  # the hand-written half was installed too
print("ok")
"""


@pytest.mark.slow
def test_colcon_build_and_import(tmp_path):
    src = tmp_path / "src" / "rayemb_ros"
    src.mkdir(parents=True)
    for name in PACKAGE_PATHS:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, src / name)
    env = dict(os.environ, AMENT_PREFIX_PATH=str(VENV), CMAKE_PREFIX_PATH=str(VENV),
               PATH=f"{VENV / 'bin'}:{os.environ['PATH']}", MAKEFLAGS="-j2")
    build = subprocess.run(
        [str(VENV / "bin" / "colcon"), "build", "--base-paths", "src", "--event-handlers", "console_direct+",
         "--cmake-args", f"-DPython3_EXECUTABLE={sys.executable}", "-DBUILD_TESTING=OFF", "-G", "Ninja"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]

    install = tmp_path / "install" / "rayemb_ros"
    for path in ["lib/rayemb_ros/rayemb_node", "lib/rayemb_ros/rayemb", "share/rayemb_ros/launch/rayemb.launch.py",
                 "share/rayemb_ros/config/rayemb.yaml", "share/ament_index/resource_index/packages/rayemb_ros"]:
        assert (install / path).exists(), path
    site = install / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    check = subprocess.run(
        [sys.executable, "-c", CHECK_INSTALL, str(install)], cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env=dict(env, PYTHONPATH=str(site), AMENT_PREFIX_PATH=f"{install}:{VENV}",
                 LD_LIBRARY_PATH=f"{install / 'lib'}:{os.environ.get('LD_LIBRARY_PATH', '')}"),
    )
    assert check.returncode == 0 and "ok" in check.stdout, check.stdout + check.stderr
