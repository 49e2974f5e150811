"""`rayemb demo` end to end on a tiny bag (2 frames, 64 px): simulate, the node over DDS,
report, summary; a second run reuses the bag."""

import json

import pytest

from rayemb_ros.cli import main
from rayemb_ros.cli.demo import SEED
from rayemb_ros.ros.demo import ensure_bag


@pytest.mark.slow
def test_demo_runs_the_main_job_and_caches_its_bag(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--frames", "2", "--size", "64", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    for words in ("registered by `rayemb node` over DDS", "frames: 2", "median", "95th", "GFR@10", "latency"):
        assert words in printed, printed
    assert (out / "report.html").is_file() and (out / "metrics.json").is_file() and (out / "node.log").is_file()
    assert len((out / "estimates.jsonl").read_text().splitlines()) == 2
    assert json.loads((out / "bag.json").read_text())["frames"] == 2

    stamp = (out / "bag").stat().st_mtime_ns
    assert ensure_bag(out, 2, SEED, 64) == out / "bag" and (out / "bag").stat().st_mtime_ns == stamp
    assert "reusing" in capsys.readouterr().out
