"""`rayemb node` as its own process, driven over DDS: ~/load_volume and /diagnostics.

One node process serves the whole module; the tests run in file order.
"""

import gzip
import os

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from std_msgs.msg import Header

from rayemb_ros.ros.convert import array_to_image
from rayemb_ros.srv import LoadVolume
from rosutil import Camera, Domain, Graph, NodeProcess

SERVICE = "/rayemb_node/load_volume"
# Loading the bundled CT prepares its landmarks and templates: allow for a slow CPU.
LOAD_TIMEOUT_S = 300.0


def values(msg: DiagnosticArray) -> dict[str, str]:
    (status,) = [s for s in msg.status if s.name.startswith("rayemb_node")]
    return {kv.key: kv.value for kv in status.values}


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


@pytest.fixture(scope="module")
def ros(volume_root, tmp_path_factory):
    domain = Domain.random()
    log = tmp_path_factory.mktemp("node") / "node.log"
    node = NodeProcess(["--ros-args", "-p", f"volume_root:={volume_root}", "-p", "device:=cpu"], domain, log)
    graph = Graph(domain)
    diagnostics = graph.subscribe(DiagnosticArray, "/diagnostics")
    yield node, graph, diagnostics
    graph.close()
    assert node.stop() == 0, node.log()[-3000:]


def call(graph: Graph, path: str, timeout_s: float = 60.0) -> LoadVolume.Response:
    return graph.call(LoadVolume, SERVICE, LoadVolume.Request(path=path), timeout_s)


def test_diagnostics_say_no_volume_at_first(ros):
    node, graph, diagnostics = ros
    msg = diagnostics.wait_for(lambda m: True, 60, "/diagnostics from the node")
    assert values(msg)["volume_loaded"] == "false", node.log()
    # the default settings are the validated ones: their poses may steer navigation
    assert (values(msg)["pose_grade"], values(msg)["pose_grade_reasons"]) == ("navigation", "")
    assert "tracking-grade" not in node.log()


def test_frames_before_a_volume_are_counted_and_dropped(ros):
    node, graph, diagnostics = ros
    camera = Camera(graph)
    image = array_to_image(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64), "mono16", Header())
    K = np.array([[500.0, 0, 31.5], [0, 500.0, 31.5], [0, 0, 1]])
    def frames_received() -> int:
        return int(values(diagnostics.wait_for(lambda m: True, 10, "diagnostics", len(diagnostics) - 1))["frames_received"])

    for _ in range(3):  # one at a time: the node keeps only the newest unhandled image
        camera.publish_heard(image, K, frames_received)
    dropped = diagnostics.wait_for(lambda m: values(m)["dropped_no_volume"] == "3", 10, "frames dropped without a volume")
    assert values(dropped)["volume_loaded"] == "false" and values(dropped)["rejected"] == "0" and node.alive
    camera.close()


def test_load_example(ros):
    node, graph, diagnostics = ros
    response = call(graph, "example", LOAD_TIMEOUT_S)
    assert response.success, response.message
    assert response.load_seconds > 0 and response.num_landmarks > 0
    loaded = diagnostics.wait_for(lambda m: values(m)["volume_loaded"] == "true", 10, "a loaded volume on /diagnostics")
    assert values(loaded)["volume"] == "example"
    assert int(values(loaded)["num_landmarks"]) == response.num_landmarks


@pytest.mark.parametrize(
    "path, reason",
    [
        ("{outside}/ct.nii.gz", "outside volume_root"),
        ("{root}/../outside/ct.nii.gz", "outside volume_root"),
        ("../outside/ct.nii.gz", "outside volume_root"),
        ("{root}/link.nii.gz", "outside volume_root"),
        ("/etc/passwd", "outside volume_root"),
        ("", "empty volume path"),
        ("{root}/corrupt.nii.gz", ""),
        ("{root}/garbage_inside_gzip.nii.gz", ""),
        ("{root}/missing.nii.gz", ""),
    ],
)
def test_refusals_leave_the_node_answering(ros, volume_root, path, reason):
    node, graph, diagnostics = ros
    response = call(graph, path.format(root=volume_root, outside=volume_root.parent / "outside"))
    assert not response.success
    assert reason in response.message and response.message
    assert response.num_landmarks == 0
    assert node.alive


def test_failed_loads_keep_the_loaded_volume(ros):
    node, graph, diagnostics = ros
    latest = diagnostics.wait_for(lambda m: True, 5, "a fresh /diagnostics message", since=len(diagnostics))
    assert values(latest)["volume_loaded"] == "true" and values(latest)["volume"] == "example"


def test_parameters_cannot_change_at_runtime(ros):
    node, graph, diagnostics = ros
    change = Parameter(name="min_inliers", value=ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=7))
    (result,) = graph.call(SetParameters, "/rayemb_node/set_parameters", SetParameters.Request(parameters=[change])).results
    assert not result.successful and "restart" in result.reason
