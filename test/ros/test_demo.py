"""`rayemb demo` end to end on a small bag (3 frames, 128 px): simulate, the node over DDS,
report, summary, with the accuracy the node reaches, then a short orbit streamed to a fresh
node at 15 fps; a second run reuses the bag."""

import json

import pytest

from rayemb_ros.cli import main
from rayemb_ros.cli.demo import SEED
from rayemb_ros.ros.demo import ensure_bag


@pytest.mark.slow
def test_demo_runs_the_main_job_and_caches_its_bag(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--frames", "3", "--size", "128", "--device", "cpu",
                 "--stream-frames", "6"]) == 0
    printed = capsys.readouterr().out
    for words in ("registered by `rayemb node` over DDS", "frames: 3", "median", "95th", "GFR@10", "latency",
                  "streamed 6 frames at 15.0 fps", "end to end"):
        assert words in printed, printed
    stream = json.loads((out / "stream" / "stream.json").read_text())
    # at the frame rate, the node poses the first frame at least (it finds the node idle), and
    # every frame is posed, dropped as stale, refused or lost: none published > 10 mm off
    assert stream["frames_posed"] >= 1 and stream["published_over_10_mm"] == 0, stream
    assert stream["frames_posed"] + stream["dropped_stale"] + stream["refused"] + stream["rejected"] + stream["lost"] == 6
    assert (out / "report.html").is_file() and (out / "metrics.json").is_file() and (out / "node.log").is_file()
    assert len((out / "estimates.jsonl").read_text().splitlines()) == 3
    assert json.loads((out / "bag.json").read_text())["frames"] == 3
    metrics = json.loads((out / "metrics.json").read_text())
    # refined through the node: every frame posed, 1.3-1.4 mm when this was written, navigation-grade
    assert metrics["frames_posed"] == 3 and metrics["mtre_mm"]["p50"] <= 3.0, metrics["per_frame_mtre_mm"]
    assert metrics["gfr_percent"]["10"] == 0.0 and metrics["pose_grade"]["grade"] == "navigation"

    stamp = (out / "bag").stat().st_mtime_ns
    assert ensure_bag(out, 3, SEED, 128) == out / "bag" and (out / "bag").stat().st_mtime_ns == stamp
    assert "reusing" in capsys.readouterr().out
