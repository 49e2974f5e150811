"""``report.html`` of a replay: the summary numbers, the figures (PNG files beside it) and one
table row per frame. A static page with relative links: it opens from disk, offline.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from jaxtyping import Float

from rayemb_ros.evaluation import report_figures as figures
from rayemb_ros.evaluation.heatmaps import Heatmaps
from rayemb_ros.evaluation.metrics import target_points
from rayemb_ros.evaluation.records import FrameRecord
from rayemb_ros.evaluation.units import mm, ms
from rayemb_ros.geometry.volume import Volume

BONE_POINTS_SHOWN = 3000  # bone points drawn in the 3D view
FIGURES = {  # file name -> caption
    "frame.png": "A frame with its estimated landmarks (PnP inliers green, outliers red) and the landmarks "
                 "reprojected by the estimated pose (cyan +).",
    "heatmaps.png": "Similarity of a few landmarks' template subspaces at every pixel of the same frame: the peak "
                    "found (white x), the ground-truth projection (red o), the estimated pose's reprojection (cyan +).",
    "poses_3d.png": "C-arm focal spots and principal rays around the CT: initial PnP poses (green), refined "
                    "poses (blue, when refinement ran), ground truth (red).",
    "errors.png": "mTRE per frame (log scale; dashed: the 5 and 10 mm GFR thresholds) and latency per frame.",
}


@dataclass
class ReportData:
    title: str
    facts: dict[str, str]  # shown at the top: bag, volume, mode, ...
    records: list[FrameRecord]
    headline: list[str]  # the summary `rayemb replay` prints
    metrics: dict[str, Any] | None  # metrics.json, when the bag has ground truth
    mtre_mm: list[float | None]  # per record: None without ground truth, inf without a pose
    mtre_initial_mm: list[float | None] | None  # per record, the PnP poses' (when refinement ran)
    volume: Volume
    refined: bool  # whether refinement ran after PnP
    shown: FrameRecord | None = None  # the frame drawn with its landmarks and heatmaps
    shown_image: Float[np.ndarray, "H W"] | None = None  # its attenuation image
    heatmaps: Heatmaps | None = None
    heatmap_titles: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _box_corners(volume: Volume) -> Float[np.ndarray, "8 3"]:
    """Corners of the CT's voxel grid in ``ct``, corner index bits = (i, j, k) at the far side."""
    far = np.array(volume.shape) - 0.5
    ijk = np.array([[far[0] if c & 1 else -0.5, far[1] if c & 2 else -0.5, far[2] if c & 4 else -0.5]
                    for c in range(8)])
    return volume.voxels_to_ct(ijk)


def _number(x: Any) -> str:
    if isinstance(x, float):
        return "-" if math.isnan(x) else f"{x:.2f}"
    return "-" if x is None else html.escape(str(x))


def _percent(x: float | None) -> str:
    return "-" if x is None or math.isnan(x) else f"{x:.0f} %"


def _percentiles(summary: dict[str, float], format_one) -> str:
    return " / ".join(format_one(summary.get(k)) for k in ("p25", "p50", "p95") if k in summary)


def metrics_rows(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    """metrics.json as a table people read: labels in words, values with units."""
    m = metrics
    rows = [
        ("frames in the bag", str(m["frames"])),
        ("frames posed", f"{m['frames_ok']} of {m['frames']}"),
        ("frames the estimator never saw (undecodable, no CameraInfo)", str(m["frames_unusable"])),
        ("mTRE, all frames with ground truth (no pose: a failure): 25th / median / 95th",
         _percentiles(m["mtre_mm"], mm)),
        (f"mTRE, the {m['frames_posed']} posed frames: 25th / median / 95th", _percentiles(m["mtre_posed_mm"], mm)),
        ("GFR@10 / GFR@5 (frames more than 10 / 5 mm off, or without a pose)",
         f"{m['gfr_percent']['10']:.1f} % / {m['gfr_percent']['5']:.1f} %"),
        (f"latency per frame ({m['latency_ms']['frames']} frames): median / 95th / 99th",
         " / ".join(ms(m["latency_ms"].get(k)) for k in ("p50", "p95", "p99"))),
    ]
    if "initial" in m:
        i = m["initial"]
        rows.append(("PnP poses before refinement: mTRE median / 95th, GFR@10",
                     f"{mm(i['mtre_mm']['p50'])} / {mm(i['mtre_mm']['p95'])}, {i['gfr_percent']['10']:.1f} %"))
    if "trust" in m:
        t = m["trust"]
        rows += [
            (f"frames whose pose (published, or PnP's when refused) is more than {t['threshold_mm']:g} mm off",
             str(t["frames_over_threshold"])),
            ("... of those refused", _percent(t["refused_of_those_percent"])),
            (f"poses published more than {t['threshold_mm']:g} mm off", str(t["accepted_over_threshold"])),
        ]
    if "pose_grade" in m:
        g = m["pose_grade"]
        rows.append(("pose grade", g["grade"] + (f" ({'; '.join(g['reasons'])})" if g["reasons"] else "")))
    rows.append(("mTRE target points", f"{m['target_points']['count']}: {m['target_points']['definition']}"))
    return [(html.escape(k), html.escape(v)) for k, v in rows]


def _frame_rows(data: ReportData) -> str:
    rows = []
    for r, m in zip(data.records, data.mtre_mm):
        latency = "-" if r.latency_ms is None else f"{r.latency_ms:.0f}"
        rows.append(
            f"<tr class={'ok' if r.ok else 'no'}><td>{r.index}</td><td>{r.stamp_ns}</td><td>{'yes' if r.ok else 'no'}"
            f"</td><td>{mm(m, unit=False)}</td><td>{len(r.landmarks)}</td><td>{r.num_inliers}</td>"
            f"<td>{_number(r.reprojection_error_px)}</td><td>{latency}</td><td>{html.escape(r.reason)}</td></tr>"
        )
    return "\n".join(rows)


def write_figures(out: Path, data: ReportData) -> list[str]:
    """The PNGs of the report (those the data allows); their file names."""
    made = []
    if data.shown is not None and data.shown_image is not None:
        r = data.shown
        i = data.records.index(r)
        title = (f"frame {r.index}: {'pose ok' if r.ok else 'refused: ' + r.reason}, {r.num_inliers}/"
                 f"{len(r.landmarks)} inliers, mTRE {mm(data.mtre_mm[i])}")
        made.append(figures.frame_figure(out / "frame.png", data.shown_image, r, title).name)
        if data.heatmaps is not None:
            made.append(figures.heatmap_figure(out / "heatmaps.png", data.shown_image, data.heatmaps, r,
                                               data.heatmap_titles).name)
    bone = target_points(data.volume, n=BONE_POINTS_SHOWN, seed=1)
    made.append(figures.poses_figure(out / "poses_3d.png", data.records, data.refined, bone,
                                     _box_corners(data.volume), data.volume.center).name)
    latency = [r.latency_ms for r in data.records if r.latency_ms is not None]
    made.append(figures.error_figure(
        out / "errors.png", [m for m in data.mtre_mm if m is not None], data.refined,
        None if data.mtre_initial_mm is None else [m for m in data.mtre_initial_mm if m is not None], latency,
    ).name)
    return made


def write_report(out: Path, data: ReportData) -> Path:
    """Write the figures and ``out/report.html``; returns the page's path."""
    made = write_figures(out, data)
    facts = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in data.facts.items())
    metrics = ("<p>No ground truth in this bag: no accuracy metrics.</p>" if data.metrics is None else
               "<table>" + "".join(f"<tr><th>{html.escape(k)}</th><td>{v}</td></tr>"
                                   for k, v in metrics_rows(data.metrics)) + "</table>")
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in data.notes)
    figs = "\n".join(f'<figure><img src="{name}" alt="{html.escape(FIGURES[name])}">'
                     f"<figcaption>{html.escape(FIGURES[name])}</figcaption></figure>" for name in made)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(data.title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 1200px; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: left; }}
tr.no td {{ background: #fdecea; }}
figure {{ margin: 1.5em 0; }} img {{ max-width: 100%; border: 1px solid #ddd; }}
figcaption {{ font-size: 0.9em; color: #555; }}
.headline {{ font-size: 1.1em; background: #f3f6fa; padding: 0.6em 1em; border-left: 4px solid #1f5fd6; }}
</style></head><body>
<h1>{html.escape(data.title)}</h1>
<table>{facts}</table>
<p class="headline">{"<br>".join(html.escape(line) for line in data.headline)}</p>
<h2>Metrics</h2>
{metrics}
<ul>{notes}</ul>
<h2>Figures</h2>
{figs}
<h2>Frames</h2>
<table><tr><th>index</th><th>stamp (ns)</th><th>ok</th><th>mTRE (mm)</th><th>landmarks</th><th>inliers</th>
<th>reprojection (px)</th><th>latency (ms)</th><th>reason</th></tr>
{_frame_rows(data)}
</table>
</body></html>
"""
    path = out / "report.html"
    path.write_text(page)
    return path
