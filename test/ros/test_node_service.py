"""`rayemb node` as its own process, driven over DDS: ~/load_volume and /diagnostics.

Two node processes serve the module: one that never gets a CT and one whose fixture loads the
bundled CT through the service. No test relies on another having run.
"""

import gzip
import os
import shutil
from dataclasses import replace

import numpy as np
import pytest
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from std_msgs.msg import Header

from rayemb_ros.ros.convert import array_to_image
from rayemb_ros.srv import LoadVolume
from rosutil import Camera, NodeUnderTest

SERVICE = "/rayemb_node/load_volume"
# Loading the bundled CT prepares its landmarks and templates: allow for a slow CPU.
LOAD_TIMEOUT_S = 300.0


@pytest.fixture(scope="module")
def volume_root(tmp_path_factory):
    """A volume_root with a corrupt NIfTI and a symlink out, beside a folder outside it."""
    base = tmp_path_factory.mktemp("volumes")
    root, outside = base / "root", base / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "ct.nii.gz").write_bytes(gzip.compress(b"outside the root"))
    (root / "corrupt.nii.gz").write_bytes(os.urandom(4096))
    (root / "garbage_inside_gzip.nii.gz").write_bytes(gzip.compress(os.urandom(4096)))
    os.symlink(outside / "ct.nii.gz", root / "link.nii.gz")
    return root


def start(volume_root, tmp_path_factory) -> NodeUnderTest:
    log = tmp_path_factory.mktemp("node") / "node.log"
    return NodeUnderTest(["--ros-args", "-p", f"volume_root:={volume_root}", "-p", "device:=cpu"], log)


@pytest.fixture(scope="module")
def empty(volume_root, tmp_path_factory):
    """A node that is never given a CT."""
    ros = start(volume_root, tmp_path_factory)
    yield ros
    assert ros.close() == 0, ros.node.log_tail()


@pytest.fixture(scope="module")
def loaded(volume_root, tmp_path_factory):
    """A node and its answer to loading the bundled CT."""
    ros = start(volume_root, tmp_path_factory)
    response = call(ros, "example", LOAD_TIMEOUT_S)
    yield ros, response
    assert ros.close() == 0, ros.node.log_tail()


def call(ros: NodeUnderTest, path: str, timeout_s: float = 60.0) -> LoadVolume.Response:
    return ros.graph.call(LoadVolume, SERVICE, LoadVolume.Request(path=path), timeout_s, abort=ros.node.exited)


def test_diagnostics_say_no_volume_at_first(empty):
    values = empty.latest()
    assert values["volume_loaded"] == "false", empty.node.log_tail()
    # the default settings are the validated ones: their poses may steer navigation
    assert (values["pose_grade"], values["pose_grade_reasons"]) == ("navigation", "")
    assert "advisory-grade" not in empty.node.log()


def test_frames_before_a_volume_are_counted_and_dropped(empty):
    camera = Camera(empty.graph)
    image = array_to_image(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64), "mono16", Header())
    K = np.array([[500.0, 0, 31.5], [0, 500.0, 31.5], [0, 0, 1]])
    before = empty.latest()
    for _ in range(3):  # one at a time: the node keeps only the newest unhandled image
        camera.publish_heard(image, K, empty.latest)
    after = empty.latest()
    assert int(after["dropped_no_volume"]) == int(before["dropped_no_volume"]) + 3
    assert after["volume_loaded"] == "false" and after["rejected"] == before["rejected"] and empty.node.alive
    camera.close()


def test_load_example(loaded):
    ros, response = loaded
    assert response.success, response.message
    assert response.load_seconds > 0 and response.num_landmarks > 0
    values = ros.values(lambda v: v["volume_loaded"] == "true", 10, "a loaded volume on /diagnostics")
    assert values["volume"] == "example" and int(values["num_landmarks"]) == response.num_landmarks


@pytest.mark.parametrize(
    "path, reason",
    [
        ("{outside}/ct.nii.gz", "outside volume_root"),
        ("{root}/../outside/ct.nii.gz", "outside volume_root"),
        ("../outside/ct.nii.gz", "outside volume_root"),
        ("{root}/link.nii.gz", "outside volume_root"),
        ("/etc/passwd", "outside volume_root"),
        ("", "empty volume path"),
        ("{root}/corrupt.nii.gz", "cannot read CT"),
        ("{root}/garbage_inside_gzip.nii.gz", "cannot read CT"),
        ("{root}/missing.nii.gz", "no such file"),
    ],
)
def test_refusals_leave_the_loaded_volume_and_the_node_answering(loaded, volume_root, path, reason):
    ros, _ = loaded
    response = call(ros, path.format(root=volume_root, outside=volume_root.parent / "outside"))
    assert not response.success and reason in response.message, response.message
    assert response.num_landmarks == 0 and ros.node.alive
    values = ros.values(lambda v: True, 10, "diagnostics after the refusal", since=len(ros.diagnostics))
    assert values["volume_loaded"] == "true" and values["volume"] == "example"


def test_parameters_cannot_change_at_runtime(empty):
    change = Parameter(name="min_inliers", value=ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=7))
    request = SetParameters.Request(parameters=[change])
    (result,) = empty.graph.call(SetParameters, "/rayemb_node/set_parameters", request).results
    assert not result.successful and "restart" in result.reason


@pytest.fixture(scope="module")
def bundles(volume_root, coarse_ct):
    """A bundle of a CT inside volume_root, and a copy of it whose CT lies outside."""
    from rayemb_ros.estimation.bundle import read_record, write_record
    from rayemb_ros.evaluation.prepare import PrepareConfig, prepare

    inside = volume_root / "patient"
    inside.mkdir()
    shutil.copy(coarse_ct, inside / "ct.nii.gz")
    prepare(PrepareConfig(str(inside / "ct.nii.gz"), inside / "bundle", device="cpu", frames=2, size=64),
            log=lambda _: None)
    escaped = volume_root / "escaped_bundle"
    shutil.copytree(inside / "bundle", escaped)
    outside_ct = volume_root.parent / "outside" / "patient.nii.gz"
    shutil.copy(coarse_ct, outside_ct)
    write_record(escaped, replace(read_record(escaped), ct_path=str(outside_ct)))
    return inside / "bundle", escaped


def test_a_prepared_bundle_loads_with_its_weights_and_self_check(loaded, bundles):
    ros, _ = loaded
    from rayemb_ros.estimation.bundle import read_record

    folder, escaped = bundles
    record = read_record(folder)
    response = call(ros, str(folder), LOAD_TIMEOUT_S)
    assert response.success, response.message
    values = ros.values(lambda v: v["volume"] == str(folder), 10, "the bundle on /diagnostics", since=0)
    assert values["weights"] == f"bundle {record.weights_digest}"
    assert values["self_check"] == record.self_check.verdict
    expected = "navigation" if not record.grade_reasons else "advisory"
    assert values["pose_grade"] == expected and values["pose_grade_reasons"] == "; ".join(record.grade_reasons)
    refusal = call(ros, str(escaped))
    assert not refusal.success and "its CT" in refusal.message and "outside volume_root" in refusal.message
    call(ros, "example", LOAD_TIMEOUT_S)  # as the other tests expect it
