"""The figures of a replay report, as PNG files (matplotlib's object API on the Agg canvas: no
pyplot state, no display).

Pixel centres sit at integer coordinates, as in ``camera``: imshow spans -0.5 .. size - 0.5.
Colours: landmarks kept by PnP green and rejected ones red (as ~/overlay and the RViz markers);
in the 3D view the PnP (initial) poses green, refined poses blue, ground truth red, as in the
RayEmb paper's figure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from jaxtyping import Float
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from rayemb_ros.geometry.camera import depth, project
from rayemb_ros.evaluation.heatmaps import Heatmaps
from rayemb_ros.evaluation.metrics import GFR_THRESHOLDS_MM
from rayemb_ros.evaluation.overlay import INLIER_RGB, OUTLIER_RGB
from rayemb_ros.evaluation.records import FrameRecord

INLIER = tuple(c / 255 for c in INLIER_RGB)
OUTLIER = tuple(c / 255 for c in OUTLIER_RGB)
REPROJECTED = "#00e5ff"
INITIAL, REFINED, TRUTH = "#1a9e1a", "#1f5fd6", "#d62020"
DPI = 100


def _figure(width_in: float, height_in: float) -> Figure:
    fig = Figure(figsize=(width_in, height_in), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, bbox_inches="tight")
    return path


def _show_image(ax, image: Float[np.ndarray, "H W"]) -> None:
    h, w = image.shape
    ax.imshow(image, cmap="gray", interpolation="nearest")
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.set_axis_off()


def frame_figure(path: Path, image: Float[np.ndarray, "H W"], record: FrameRecord, title: str) -> Path:
    """The frame with its estimated landmarks (inliers green, outliers red) and, when there is
    a pose, the landmarks reprojected by it (cyan +, joined to their detections)."""
    fig = _figure(7, 7 * image.shape[0] / image.shape[1] + 0.6)
    ax = fig.add_subplot(1, 1, 1)
    _show_image(ax, image)
    lm = record.landmarks
    T = record.T_ct_source if record.ok else record.T_initial
    if len(lm) and T is not None and record.K is not None:
        reproj = project(record.K, T, lm.points_ct)
        for (u0, v0), (u1, v1) in zip(lm.uv, reproj):
            ax.plot([u0, u1], [v0, v1], color=REPROJECTED, linewidth=0.6, alpha=0.7)
        ax.scatter(reproj[:, 0], reproj[:, 1], s=22, marker="+", color=REPROJECTED, linewidths=0.9,
                   label="reprojected by the " + ("estimated" if record.ok else "refused PnP") + " pose")
    for keep, colour, name in ((True, INLIER, "PnP inlier"), (False, OUTLIER, "PnP outlier")):
        sel = lm.inliers == keep
        if sel.any():
            ax.scatter(lm.uv[sel, 0], lm.uv[sel, 1], s=16, facecolors="none", edgecolors=[colour], linewidths=0.9,
                       label=f"{name} ({int(sel.sum())})")
    if len(lm):
        ax.legend(loc="lower right", fontsize=7, framealpha=0.7)
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


def heatmap_figure(
    path: Path, image: Float[np.ndarray, "H W"], heatmaps: Heatmaps, record: FrameRecord, titles: Sequence[str]
) -> Path:
    """One panel per landmark: its similarity map over the frame, the peak found (white x),
    its projection by the ground truth (red o) and by the estimated pose (cyan +)."""
    n = len(heatmaps.maps)
    h, w = image.shape
    fig = _figure(3.2 * n, 3.2 * h / w + 0.5)
    peaks = record.landmarks
    extent = (-0.5, w - 0.5, h - 0.5, -0.5)  # the working grid spans the same field of view
    for i in range(n):
        ax = fig.add_subplot(1, n, i + 1)
        _show_image(ax, image)
        im = ax.imshow(heatmaps.maps[i], cmap="inferno", alpha=0.6, extent=extent, vmin=0.0, vmax=1.0,
                       interpolation="bilinear")
        X = heatmaps.points_ct[i : i + 1]
        j = int(np.argmin(np.linalg.norm(peaks.points_ct - X, axis=1)))
        ax.scatter(*peaks.uv[j], s=40, marker="x", color="white", linewidths=1.2)
        if record.T_gt is not None and record.K is not None:
            ax.scatter(*project(record.K, record.T_gt, X)[0], s=60, facecolors="none", edgecolors=TRUTH,
                       linewidths=1.2)
        if record.T_ct_source is not None and record.K is not None:
            ax.scatter(*project(record.K, record.T_ct_source, X)[0], s=40, marker="+", color=REPROJECTED,
                       linewidths=1.0)
        ax.set_title(titles[i], fontsize=8)
    fig.colorbar(im, ax=fig.axes, fraction=0.02, pad=0.01, label="similarity")
    return _save(fig, path)


# The 12 edges of a box whose 8 corners are indexed by 3 bits (one per axis).
_BOX_EDGES = [(a, a | bit) for a in range(8) for bit in (1, 2, 4) if not a & bit]


def poses_figure(
    path: Path,
    records: Sequence[FrameRecord],
    refined: bool,
    bone_points: Float[np.ndarray, "N 3"],
    box_corners: Float[np.ndarray, "8 3"],
    centre: Float[np.ndarray, "3"],
) -> Path:
    """C-arm sources around the CT in ``ct`` (mm): each pose's focal spot and its principal ray
    to the CT centre's depth. Ground truth red; the accepted poses green (PnP) or, when
    refinement ran, blue (refined) beside their PnP poses in green where those are known."""
    fig = _figure(8, 7)
    ax = fig.add_subplot(1, 1, 1, projection="3d")
    ax.scatter(*bone_points.T, s=0.5, color="0.55", alpha=0.35)
    for a, b in _BOX_EDGES:
        ax.plot(*np.stack([box_corners[a], box_corners[b]]).T, color="0.4", linewidth=0.6)
    accepted = [r for r in records if r.ok]
    initial = [r.T_initial for r in accepted if r.T_initial is not None] if refined else [r.T_ct_source for r in accepted]
    kinds = [
        ("ground truth", TRUTH, [r.T_gt for r in records if r.T_gt is not None]),
        ("initial (PnP)", INITIAL, initial),
        ("refined", REFINED, [r.T_ct_source for r in accepted] if refined else []),
    ]
    for name, colour, poses in kinds:
        if not poses:
            continue
        T = np.stack(poses)
        src = T[:, :3, 3]
        reach = depth(T, np.broadcast_to(centre, (len(T), 1, 3)))[:, 0]
        tips = src + T[:, :3, 2] * reach[:, None]
        ax.scatter(*src.T, s=18, color=colour, label=f"{name} ({len(T)})", depthshade=False)
        for s, t in zip(src, tips):
            ax.plot(*np.stack([s, t]).T, color=colour, linewidth=0.7, alpha=0.8)
    everything = np.concatenate([box_corners] + [np.stack(p)[:, :3, 3] for _, _, p in kinds if p])
    lo, hi = everything.min(0), everything.max(0)
    ax.set_box_aspect(hi - lo)
    ax.set_xlabel("x (mm)", fontsize=8)
    ax.set_ylabel("y (mm)", fontsize=8)
    ax.set_zlabel("z (mm)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("C-arm sources and principal rays around the CT (frame ct)", fontsize=9)
    return _save(fig, path)


def error_figure(
    path: Path, mtre_mm: Sequence[float], refined: bool, mtre_initial_mm: Sequence[float] | None,
    latency_ms: Sequence[float],
) -> Path:
    """Histograms: mTRE per frame (log scale; GFR thresholds dashed; frames without a pose
    counted in the title) and latency per estimated frame."""
    fig = _figure(11, 3.6)
    ax = fig.add_subplot(1, 2, 1)
    finite = np.array([m for m in mtre_mm if math.isfinite(m)])
    failures = len(mtre_mm) - len(finite)
    series = [("refined" if refined else "PnP", REFINED if refined else INITIAL, finite)]
    if mtre_initial_mm is not None:
        series.insert(0, ("initial (PnP)", INITIAL, np.array([m for m in mtre_initial_mm if math.isfinite(m)])))
    values = np.concatenate([s for _, _, s in series]) if any(len(s) for _, _, s in series) else np.array([1.0])
    lo, hi = max(min(values.min(), 1.0) / 1.5, 1e-2), max(values.max(), 20.0) * 1.5
    bins = np.geomspace(lo, hi, 30)
    for name, colour, s in series:
        ax.hist(s, bins=bins, color=colour, alpha=0.6, label=f"{name} ({len(s)})")
    for d in GFR_THRESHOLDS_MM:
        ax.axvline(d, color="0.2", linestyle="--", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("mTRE (mm)")
    ax.set_ylabel("frames")
    ax.set_title(f"mTRE per frame; {failures} frame(s) without a pose", fontsize=9)
    ax.legend(fontsize=8)
    ax = fig.add_subplot(1, 2, 2)
    if len(latency_ms):
        ax.hist(latency_ms, bins=20, color="0.4")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("frames")
    ax.set_title(f"latency per estimated frame ({len(latency_ms)})", fontsize=9)
    return _save(fig, path)
