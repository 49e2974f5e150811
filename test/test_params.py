"""config/rayemb.yaml says what params.py says, and the node refuses bad values at start."""

import subprocess
import sys

import pytest
import yaml

from rayemb_ros.params import ParamError, Params
from rayemb_ros.ros.graph import Domain
from rosutil import REPO

CONFIG = REPO / "config" / "rayemb.yaml"


def config_values() -> dict:
    (section,) = yaml.safe_load(CONFIG.read_text()).values()
    return section["ros__parameters"]


def test_yaml_holds_every_default():
    assert config_values() == Params().as_dict()
    assert Params.from_mapping(config_values()) == Params()


def test_from_mapping_types():
    assert Params.from_mapping({"sdd_mm": 1000}).sdd_mm == 1000.0  # an int where a float is due: fine
    for bad in [{"num_keep": 2.5}, {"refine": 1}, {"device": 3}, {"num_landmark": 3}, {"min_inlier_ratio": 0.0}]:
        with pytest.raises(ParamError):
            Params.from_mapping(bad)


def run_node(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rayemb_ros.cli", "node", *args], env=Domain.random().env(), capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize(
    "assignment, message",
    [
        ("num_keep:=-1", "num_keep must be > 0"),
        ("device:=tpu", "device must be one of"),
        ("image_intensity:=log", "image_intensity must be one of"),
        ("device:=3", "device must be str"),
        ("num_landmark:=3", "unknown parameter(s): num_landmark"),
        ("checkpoint:=/nonexistent/weights.pt", "is not a file"),
        ("volume:=/etc/passwd", "outside volume_root"),
    ],
)
def test_node_refuses_bad_values_at_start(assignment, message):
    result = run_node("--ros-args", "-p", assignment)
    assert result.returncode == 2, result.stderr
    assert "bad parameter:" in result.stderr and message in result.stderr
    assert "Traceback" not in result.stderr


def test_node_refuses_a_bad_params_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(CONFIG.read_text().replace("min_inliers: 40", "min_inliers: 3"))
    result = run_node("--params-file", str(bad))
    assert result.returncode == 2 and "min_inliers must be >= 6" in result.stderr


def test_node_without_a_gpu_refuses_device_cuda():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = run_node("--ros-args", "-p", "device:=cuda")
    assert result.returncode == 2 and "bad parameter" in result.stderr and "no GPU" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
