"""The command line as a user meets it: every bad invocation of every subcommand ends in one
line `rayemb <command>: error: ...` and exit code 2, before any work and never with a
traceback; every option says what it is, and every subcommand's help ends with an example."""

import argparse

import numpy as np
import pytest

from rayemb_ros import __version__
from rayemb_ros.cli import SUBCOMMANDS, main
from rayemb_ros.geometry.camera import Detector
from rayemb_ros.io.bags import Frame, write_bag


def invoke(capsys, *argv) -> tuple[int, str]:
    """Exit code and stderr of `rayemb ARGV` (argparse's own errors exit through SystemExit)."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as stop:
        code = stop.code
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A small bag, a bag without CameraInfo, one on other topics, a corrupt checkpoint."""
    base = tmp_path_factory.mktemp("cli")
    K = Detector(1000.0, 32, 32, 8.0, 8.0).K
    frames = [Frame(10**9 + i, np.random.default_rng(i).random((32, 32)).astype(np.float32), K, np.eye(4))
              for i in range(2)]
    write_bag(base / "bag", frames)
    write_bag(base / "elsewhere", frames, image_topic="/c_arm_2/image_raw", info_topic="/c_arm_2/camera_info")
    from rosbags.rosbag2 import Writer

    from rayemb_ros.io.bags import IMAGE_TYPE, typestore
    with Writer(base / "no_info", version=Writer.VERSION_LATEST) as writer:  # images only
        conn = writer.add_connection("/carm/image", IMAGE_TYPE, typestore=typestore())
        from rayemb_ros.io.bags import _messages
        writer.write(conn, frames[0].stamp_ns, typestore().serialize_cdr(_messages(frames[0], "s", "ct")["image"], IMAGE_TYPE))
    (base / "corrupt.pt").write_bytes(b"PK\x03\x04 not a checkpoint at all")
    (base / "not_a_bag").mkdir()
    (base / "exists").mkdir()
    return base


CASES = [
    # (subcommand arguments, what the one line says)
    (["simulate", "--volume", "example", "--out", "{new}", "--frames", "0"], "argument --frames: must be at least 1"),
    (["simulate", "--volume", "example", "--out", "{base}/exists"], "exists already"),
    (["simulate", "--volume", "{base}/nope.nii.gz", "--out", "{new}"], "no such file or folder"),
    (["simulate", "--volume", "example", "--out", "{new}", "--width", "4"], "must be at least 8"),
    (["simulate", "--volume", "example", "--out", "{new}", "--fps", "-1"], "must be positive"),
    (["simulate", "--volume", "example", "--out", "{new}", "--renderer", "povray"], "invalid choice"),
    (["simulate", "--volume", "example", "--out", "{new}", "--trajectory", "loop"], "invalid choice"),
    (["simulate", "--volume", "example", "--out", "{new}", "--display", "vendor", "--image-intensity", "transmission"],
     "needs attenuation intensity"),
    (["train", "--steps", "-3", "--out", "{new}"], "argument --steps: must be at least 1"),
    (["train", "--batch", "0", "--out", "{new}"], "argument --batch: must be at least 1"),
    (["train", "--operating-room", "1.5", "--out", "{new}"], "argument --operating-room: must be from 0 to 1"),
    (["train", "--volume", "{base}/nope.nii.gz", "--out", "{new}"], "no such file or folder"),
    (["train", "--volumes", "{base}/nope", "--out", "{new}"], "no such file or folder"),
    (["train", "--volumes", "{base}/exists", "--out", "{new}"], "no CT"),
    (["train", "--init", "{base}/corrupt.pt", "--out", "{new}"], "not a rayemb checkpoint, or corrupt"),
    (["train", "--out", "{base}/corrupt.pt/w.pt"], "cannot write"),
    (["anatomy", "--volume", "{base}/nope.nii.gz", "--out", "{new}", "--seed", "1"], "no such file or folder"),
    (["anatomy", "--volume", "example", "--out", "{new}", "--seed", "one"], "invalid int value"),
    (["prepare", "--volume", "{base}/nope.nii.gz", "--out", "{new}"], "no such file or folder"),
    (["prepare", "--volume", "example", "--out", "{new}", "--finetune-steps", "-1"], "must be at least 0"),
    (["prepare", "--volume", "example", "--out", "{new}", "--checkpoint", "{base}/corrupt.pt"],
     "not a rayemb checkpoint, or corrupt"),
    (["replay", "{base}/nope", "--volume", "example", "--out", "{new}"], "no such file or folder"),
    (["replay", "{base}/not_a_bag", "--volume", "example", "--out", "{new}"], "cannot read the bag"),
    (["replay", "{base}/no_info", "--volume", "example", "--out", "{new}"], "no sensor_msgs/msg/CameraInfo topic"),
    (["replay", "{base}/elsewhere", "--volume", "example", "--out", "{new}"],
     "its sensor_msgs/msg/Image topics: /c_arm_2/image_raw (pick one with --image-topic)"),
    (["replay", "{base}/elsewhere", "--volume", "example", "--out", "{new}", "--image-topic", "/c_arm_2/image_raw"],
     "its sensor_msgs/msg/CameraInfo topics: /c_arm_2/camera_info (pick one with --info-topic)"),
    (["replay", "{base}/bag", "--volume", "example", "--out", "{new}", "--checkpoint", "{base}/corrupt.pt"],
     "not a rayemb checkpoint, or corrupt"),
    (["replay", "{base}/bag", "--volume", "example", "--out", "{new}", "--checkpoint", "{base}/missing.pt"],
     "checkpoint"),
    (["replay", "{base}/bag", "--volume", "{base}/nope.nii.gz", "--out", "{new}"], "no such file or folder"),
    (["replay", "{base}/bag", "--volume", "example", "--out", "{new}", "--refine-steps", "0"], "must be at least 1"),
    (["benchmark", "--out", "{new}", "--frames", "0"], "must be at least 1"),
    (["benchmark", "--out", "{new}", "--dataset", "nosuch", "x.h5"], "unknown dataset"),
    (["benchmark", "--out", "{new}", "--device", "cpu", "--dataset", "deepfluoro", "{base}/missing.h5"], ""),
    (["benchmark", "--out", "{new}", "--volume", "{base}/nope.nii.gz"], "no such file or folder"),
    (["speed", "--frames", "0"], "must be at least 1"),
    (["speed", "--volume", "{base}/nope.nii.gz"], "no such file or folder"),
    (["demo", "--out", "{new}", "--size", "8"], "must be at least 32"),
    (["demo", "--out", "{new}", "--frames", "0"], "must be at least 1"),
    (["node", "--params-file", "{base}/nope.yaml"], "no such file or folder"),
]


@pytest.mark.parametrize("argv, says", CASES, ids=[" ".join(c[0][:1] + c[0][-2:]) for c in CASES])
def test_a_bad_invocation_is_one_line_and_exit_code_2(capsys, files, tmp_path, argv, says):
    code, err = invoke(capsys, *(a.format(base=files, new=tmp_path / "out") for a in argv))
    last = err.strip().splitlines()[-1] if err.strip() else ""
    assert code == 2, err
    assert "Traceback" not in err and "weights_only" not in err, err
    assert last.startswith(f"rayemb {argv[0]}: error: ") and says in last, err
    assert not (tmp_path / "out").exists()  # refused before any work


def test_version_and_help_that_teaches(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"rayemb {__version__}"
    for name in SUBCOMMANDS:
        parser = argparse.ArgumentParser(prog=f"rayemb {name}")
        module = __import__(SUBCOMMANDS[name][0], fromlist=["add_arguments"])
        module.add_arguments(parser)
        for action in parser._actions:
            if action.dest != "help":
                assert action.help, f"rayemb {name} {action.option_strings or action.dest}: no help"
        assert parser.epilog and "example: rayemb" in parser.epilog.splitlines()[-1], name
