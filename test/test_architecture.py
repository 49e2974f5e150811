"""The core is ROS-free: every module outside rayemb_ros/ros imports without rclpy."""

import pkgutil
import subprocess
import sys
from pathlib import Path

import rayemb_ros

CORE = sorted(
    f"rayemb_ros.{m.name}"
    for m in pkgutil.iter_modules([str(Path(rayemb_ros.__file__).parent)])
    if m.name not in {"ros", "msg", "srv"} and not m.name.startswith("_")
)


def test_core_modules_import_without_rclpy():
    assert "rayemb_ros.estimator" in CORE and "rayemb_ros.camera" in CORE
    probe = (
        "import importlib, sys\n"
        f"for name in {CORE!r}:\n"
        "    importlib.import_module(name)\n"
        "leaked = sorted(m for m in sys.modules if m == 'rclpy' or m.startswith('rclpy.'))\n"
        "assert not leaked, leaked\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
