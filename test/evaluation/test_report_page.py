"""report.html opens in headless Chromium and its figures render.

The report is built from synthetic records on a small synthetic CT (no estimator, seconds).
Chromium takes a screenshot of it, and a second one after the PNGs are deleted: the figures
(images, heatmaps, coloured markers) must add plenty of colour that the bare page lacks.
Skipped when no Chromium is installed (Debian: `apt-get install --no-install-recommends
chromium`); RAYEMB_CHROMIUM names another binary.
"""

import math
import os
import shutil
import subprocess

import numpy as np
import pytest
from matplotlib.image import imread

from rayemb_ros.geometry.camera import Detector, project
from rayemb_ros.evaluation.heatmaps import Heatmaps
from rayemb_ros.evaluation.metrics import frame_mtre, target_points
from rayemb_ros.geometry.poses import carm_pose
from rayemb_ros.evaluation.records import FrameRecord
from rayemb_ros.evaluation.replay import Evaluation, evaluate, summary_lines
from rayemb_ros.evaluation.report import FIGURES, ReportData, write_report
from rayemb_ros.estimation.result import Landmarks
from rayemb_ros.geometry.volume import Volume


def chromium() -> str | None:
    return os.environ.get("RAYEMB_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def synthetic_volume() -> Volume:
    hu = np.full((48, 48, 40), -1000.0, np.float32)
    hu[18:30, 10:38, 5:35] = 900.0  # a "spine"
    hu[8:40, 20:24, 15:18] = 600.0  # a "rib"
    affine = np.diag([4.0, 4.0, 5.0, 1.0])
    affine[:3, 3] = [-96.0, -96.0, -100.0]
    return Volume(hu, affine, "synthetic")


def synthetic_replay(volume: Volume, n: int = 6) -> tuple[list[FrameRecord], Evaluation]:
    rng = np.random.default_rng(0)
    detector = Detector(sdd=1000.0, height=96, width=128, delx=2.0, dely=2.0)
    points = target_points(volume, n=60, seed=3)
    records = []
    for i in range(n):
        T_gt = carm_pose(volume.center, 15.0 * (i - n / 2), 5.0 * i, 0.0, 800.0)
        T_initial = T_gt.copy()
        T_initial[:3, 3] += rng.normal(0, 4.0, 3)
        T_refined = (T_initial + T_gt) / 2  # halfway: same rotation, so still a rigid transform
        uv = project(detector.K, T_gt, points) + rng.normal(0, 1.0, (len(points), 2))
        inliers = rng.random(len(points)) > 0.3
        ok = i != 2
        records.append(FrameRecord(
            index=i, stamp_ns=i * 10**8, ok=ok, reason="" if ok else "too few inliers (12 < 40)",
            T_ct_source=T_refined if ok else None, T_initial=T_initial,
            landmarks=Landmarks(points, uv, rng.uniform(0.5, 1.0, len(points)), inliers),
            num_inliers=int(inliers.sum()), reprojection_error_px=1.2, latency_ms=100.0 + 10 * i,
            K=detector.K, T_gt=T_gt,
        ))
    return records, evaluate(records, volume, candidates_known=True, refine=True)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    volume = synthetic_volume()
    records, evaluation = synthetic_replay(volume)
    shown = records[0]
    v, u = np.mgrid[0:96, 0:128]
    image = np.exp(-((u - 64.0) ** 2 + (v - 48.0) ** 2) / 900.0).astype(np.float32)
    maps = np.stack([np.exp(-((u[::2, ::2] - 10.0 * k) ** 2 + (v[::2, ::2] - 20.0) ** 2) / 40.0) for k in range(1, 4)])
    data = ReportData(
        title="synthetic replay", facts={"bag": "synthetic"}, records=records,
        headline=summary_lines(records, evaluation), metrics=evaluation.metrics, mtre_mm=evaluation.mtre_mm,
        mtre_initial_mm=evaluation.mtre_initial_mm, volume=volume, refined=True, shown=shown, shown_image=image,
        heatmaps=Heatmaps(shown.landmarks.points_ct[:3], maps.astype(np.float32)),
        heatmap_titles=["a", "b", "c"], notes=["synthetic data"],
    )
    return write_report(out, data)


def test_the_page_links_every_figure(report):
    page = report.read_text()
    for name in FIGURES:
        assert f'src="{name}"' in page and (report.parent / name).is_file(), name
    assert "synthetic replay" in page and "frames: 6 (5 ok, 1 refused, 0 unusable)" in page
    assert page.count("<tr class=") == 6 and "too few inliers" in page


def test_synthetic_errors_are_what_was_built(report):
    volume = synthetic_volume()
    records, evaluation = synthetic_replay(volume)
    points = target_points(volume)
    for r, m, m0 in zip(records, evaluation.mtre_mm, evaluation.mtre_initial_mm):
        if r.ok:
            assert m == pytest.approx(frame_mtre(r.T_initial, r.T_gt, points) / 2)
            assert m0 == pytest.approx(frame_mtre(r.T_initial, r.T_gt, points))
        else:
            assert math.isinf(m) and math.isinf(m0)


def screenshot(browser: str, page, png, profile) -> np.ndarray:
    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}", "--hide-scrollbars",
         "--window-size=1200,4000", f"--screenshot={png}", page.as_uri()],
        check=True, capture_output=True, timeout=120,
    )
    return imread(png)[..., :3]


def colourful(rgb: np.ndarray) -> int:
    """Pixels of clear colour (figures), not grey text or the page's pale backgrounds."""
    return int(((rgb.max(-1) - rgb.min(-1)) > 0.35).sum())


@pytest.mark.skipif(chromium() is None, reason="no Chromium: apt-get install --no-install-recommends chromium "
                    "(or set RAYEMB_CHROMIUM) to check that report.html renders")
def test_headless_chromium_renders_the_figures(report, tmp_path):
    browser = chromium()
    with_figures = screenshot(browser, report, tmp_path / "page.png", tmp_path / "profile1")
    assert with_figures.shape[1] == 1200 and with_figures.std() > 0.05
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "report.html").write_text(report.read_text())  # the same page without its PNGs
    without = screenshot(browser, bare / "report.html", tmp_path / "bare.png", tmp_path / "profile2")
    assert colourful(with_figures) > 5_000, "the figures did not render"
    assert colourful(with_figures) > 10 * max(colourful(without), 1)
