"""``rayemb replay BAG --volume CT --out DIR``: register every image of a bag and evaluate.

Writes (../shared/CONTRACT.md, "`rayemb replay` output"):

* ``DIR/estimates.jsonl``: one object per image in bag order (``records.FrameRecord``);
* ``DIR/metrics.json`` when the bag has ground truth: mTRE percentiles and GFR@10/@5 over
  every frame with ground truth (a frame without a pose counts as a failure; see
  ``metrics``), latency percentiles, frame counts, and what the numbers are over;
* ``DIR/report.html`` with PNG figures beside it (``report``);
* with tracking (``--tracking``), the same frames are registered one by one from scratch too:
  ``DIR/estimates_frame_by_frame.jsonl``, and ``metrics.json``'s ``tracking`` compares the two.

How the frames are registered is the caller's choice (a ``Registration``): ``InProcess``
runs the estimator here, frame after frame, and the latency is the estimator's own;
``rayemb_ros.ros.bag_player.ThroughNode`` feeds `rayemb node` in its own process over DDS, and
the latency is the node's, from receiving the image to publishing its result (the report's
heatmaps then come from an estimator loaded here once the node is done). This module never
imports ROS.
"""

from __future__ import annotations

import json
import math
import sys
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from rayemb_ros.errors import InputError
from rayemb_ros.estimation.tracking import Prior, Tracker
from rayemb_ros.io.bags import IMAGE_TOPIC, INFO_TOPIC, POSE_TOPIC, StampedPose, read_bag
from rayemb_ros.io.camera_info import NO_CAMERA_INFO
from rayemb_ros.io.images import ImageError
from rayemb_ros.imaging.intensity import estimator_image
from rayemb_ros.evaluation.metrics import (
    TARGET_DEFINITION, accuracy_summary, covariance_coverage, frame_mtre, latency_summary, target_points,
)
from rayemb_ros.params import Params
from rayemb_ros.evaluation.records import FrameRecord, json_safe, write_estimates
from rayemb_ros.evaluation.units import mm, ms
from rayemb_ros.estimation.result import PoseGrade
from rayemb_ros.geometry.covariance import pose_error
from rayemb_ros.geometry.volume import Volume

GFR_TRUST_MM = 10.0  # a pose worse than this should have been refused
HEATMAP_LANDMARKS = 4


@dataclass(frozen=True)
class Topics:
    image: str = IMAGE_TOPIC
    info: str = INFO_TOPIC
    pose: str = POSE_TOPIC

    def read(self, bag: Path):
        """The bag's frames (``bags.read_bag``) on these topics."""
        return read_bag(bag, image_topic=self.image, info_topic=self.info, pose_topic=self.pose)


@dataclass
class Evaluation:
    mtre_mm: list[float | None]  # per record: None without ground truth, inf without a pose
    mtre_initial_mm: list[float | None] | None  # per record, of the PnP poses (refinement runs only)
    metrics: dict[str, Any]  # metrics.json (with inf where JSON gets null)


@dataclass
class Replay:
    records: list[FrameRecord]
    evaluation: Evaluation | None
    out: Path
    report: Path
    pose_grade: PoseGrade

    def summary(self) -> str:
        return "\n".join([*summary_lines(self.records, self.evaluation), f"poses: {self.pose_grade}",
                          f"report: {self.report}"])


class ReplayError(InputError, RuntimeError):
    """The replay cannot go on (e.g. the node did not load the CT); the message says why."""


# --------------------------------------------------------------------------- registration


def prepare_image(frame, params: Params) -> np.ndarray | str:
    """The image the estimator gets (``imaging.intensity.estimator_image``), or the reason the
    frame is unusable."""
    if isinstance(frame.image, ImageError):
        return str(frame.image)
    if frame.K is None:
        return frame.K_missing or f"{NO_CAMERA_INFO} at or before this image's stamp"
    try:
        return estimator_image(frame.image, params.image_intensity, params.dewarp)
    except ImageError as exc:
        return str(exc)


def register_in_process(estimator, bag: Path, topics: Topics, params: Params, priors: Sequence[StampedPose] = ()):
    """FrameRecords of the bag's images, estimated here one after the other (lazily). With
    ``params.tracking``, through a Tracker (each frame's prior: the last trusted pose), which
    ``priors`` (poses from outside, ``ct`` frame) seed as their stamps come."""
    tracker = Tracker(estimator) if params.tracking else None
    waiting = deque(sorted(priors, key=lambda p: p.stamp_ns))
    for index, frame in enumerate(topics.read(bag)):
        while waiting and waiting[0].stamp_ns <= frame.stamp_ns:
            outside = waiting.popleft()
            if tracker is not None:
                tracker.seed(Prior.outside(outside.T, outside.stamp_ns))
        image = prepare_image(frame, params)
        if isinstance(image, str):
            yield FrameRecord.unusable(index, frame, image)
        elif tracker is not None:
            yield FrameRecord.of_estimate(index, frame, tracker.estimate(image, frame.K, frame.stamp_ns))
        else:
            yield FrameRecord.of_estimate(index, frame, estimator.estimate(image, frame.K))


@dataclass
class Registered:
    """What a registration made of a bag."""

    records: list[FrameRecord]
    volume: Volume  # the CT, as loaded
    estimator: Any | None  # an Estimator holding the CT (for the report's heatmaps); None: none here
    # With tracking: the same frames registered one by one from scratch, to compare with.
    frame_by_frame: list[FrameRecord] | None = None


class Registration(Protocol):
    """How a replay's frames are registered."""

    mode: str  # what the report calls it
    # Whether records of refused frames carry their PnP pose, so that the trust decision itself
    # can be judged (how many bad poses were refused).
    knows_refused_poses: bool
    notes: tuple[str, ...]  # for the report

    def register(self, bag: Path, volume_spec: str, params: Params, topics: Topics, out: Path,
                 progress: dict[str, Any]) -> Registered: ...


class InProcess:
    """The estimator here, frame after frame (``register_in_process``); with tracking, the
    frames are registered twice, tracked and one by one from scratch, so that the two compare
    on the same frames in one run. ``priors``: poses from outside (``--prior-topic``)."""

    mode = "in process"
    knows_refused_poses = True
    notes: tuple[str, ...] = ()

    def __init__(self, priors: Sequence[StampedPose] = ()):
        self.priors = priors

    def register(self, bag: Path, volume_spec: str, params: Params, topics: Topics, out: Path,
                 progress: dict[str, Any]) -> Registered:
        from tqdm import tqdm

        from rayemb_ros.estimation.estimator import Estimator

        estimator = Estimator(params)
        estimator.load_volume(volume_spec)
        records = list(tqdm(register_in_process(estimator, bag, topics, params, self.priors), **progress))
        frame_by_frame = None
        if params.tracking:
            progress = progress | {"desc": "frame by frame"}
            scratch = replace(params, tracking=False)
            frame_by_frame = list(tqdm(register_in_process(estimator, bag, topics, scratch), **progress))
        return Registered(records, estimator.scene.volume, estimator, frame_by_frame)


# --------------------------------------------------------------------------- evaluation


def evaluate(records: list[FrameRecord], volume, candidates_known: bool, refine: bool) -> Evaluation | None:
    """Accuracy against the bag's ground truth (None when it has none), latency, counts.

    ``candidates_known``: the records carry the PnP pose of refused frames too (in process),
    so the trust decision itself can be judged: how many bad poses were refused.
    """
    evaluated = [r for r in records if r.T_gt is not None]
    if not evaluated:
        return None
    points = target_points(volume)
    mtre = [None if r.T_gt is None else frame_mtre(r.T_ct_source, r.T_gt, points) for r in records]
    latency = [r.latency_ms for r in records if r.latency_ms is not None]
    metrics: dict[str, Any] = {
        "frames": len(records),
        "frames_ok": sum(r.ok for r in records),
        "frames_unusable": sum(r.latency_ms is None for r in records),
        **accuracy_summary([m for m in mtre if m is not None]),
        "latency_ms": latency_summary(latency),
        "target_points": {"count": len(points), "definition": TARGET_DEFINITION},
    }
    mtre_initial = None
    if refine and candidates_known:
        mtre_initial = [None if r.T_gt is None else frame_mtre(r.T_initial if r.ok else None, r.T_gt, points)
                        for r in records]
        metrics["initial"] = accuracy_summary([m for m in mtre_initial if m is not None])
    if candidates_known:
        metrics["trust"] = _trust(evaluated, points)
    posed = [r for r in evaluated if r.ok and r.covariance is not None]
    metrics["covariance"] = covariance_coverage([pose_error(r.T_ct_source, r.T_gt) for r in posed],
                                                [r.covariance for r in posed])
    metrics["per_frame_mtre_mm"] = mtre
    return Evaluation(mtre, mtre_initial, metrics)


def _trust(evaluated: list[FrameRecord], points) -> dict[str, Any]:
    """How well ``ok`` separates good poses from bad ones: each frame's candidate pose (the
    published one, else the refused PnP pose; none = infinitely bad) against GFR_TRUST_MM."""
    bad = [frame_mtre(r.T_ct_source if r.ok else r.T_initial, r.T_gt, points) > GFR_TRUST_MM for r in evaluated]
    refused_bad = sum(b and not r.ok for b, r in zip(bad, evaluated))
    return {
        "threshold_mm": GFR_TRUST_MM,
        "frames_over_threshold": sum(bad),
        "refused_of_those_percent": 100.0 * refused_bad / sum(bad) if any(bad) else math.nan,
        "accepted_over_threshold": sum(b and r.ok for b, r in zip(bad, evaluated)),
        "ok_percent": 100.0 * sum(r.ok for r in evaluated) / len(evaluated),
    }


# --------------------------------------------------------------------------- report


def _shown_record(records: list[FrameRecord], mtre: list[float | None]) -> FrameRecord | None:
    """The frame to draw: the ok frame of median mTRE (typical, not the best), else the first
    ok frame, else the first with landmarks."""
    ranked = sorted((m, i) for i, m in enumerate(mtre) if m is not None and math.isfinite(m))
    if ranked:
        return records[ranked[len(ranked) // 2][1]]
    return next((r for r in records if r.ok), None) or next((r for r in records if len(r.landmarks)), None)


def _heatmaps(estimator, record: FrameRecord, image):
    from rayemb_ros.evaluation.heatmaps import landmark_heatmaps, pick_landmarks

    chosen = pick_landmarks(record.landmarks, HEATMAP_LANDMARKS)
    lm = record.landmarks
    titles = [f"score {lm.scores[j]:.2f}, {'inlier' if lm.inliers[j] else 'outlier'}" for j in chosen]
    return landmark_heatmaps(estimator, image, record.K, lm.points_ct[chosen]), titles


def _write_report(out: Path, bag: Path, topics: Topics, params: Params, records, evaluation, volume, estimator,
                 facts: dict[str, str], notes: list[str]) -> Path:
    from rayemb_ros.evaluation.report import ReportData, write_report as write_page

    mtre = evaluation.mtre_mm if evaluation else [None] * len(records)
    data = ReportData(
        title=f"rayemb replay: {bag.name}", facts=facts, records=records,
        headline=summary_lines(records, evaluation), metrics=evaluation.metrics if evaluation else None, mtre_mm=mtre,
        mtre_initial_mm=evaluation.mtre_initial_mm if evaluation else None, volume=volume,
        refined=params.refine, notes=notes,
    )
    shown = _shown_record(records, mtre)
    if shown is not None:
        frame = next(f for i, f in enumerate(topics.read(bag)) if i == shown.index)
        data.shown, data.shown_image = shown, estimator_image(frame.image, params.image_intensity, params.dewarp)
        if len(shown.landmarks) and estimator is not None:
            data.heatmaps, data.heatmap_titles = _heatmaps(estimator, shown, data.shown_image)
    return write_page(out, data)


# --------------------------------------------------------------------------- the command


def replay(bag: Path, volume_spec: str, out: Path, params: Params, topics: Topics = Topics(),
           registration: Registration | None = None) -> Replay:
    """Register (``InProcess`` unless told otherwise), evaluate and write DIR's files.
    Raises VolumeError, ReplayError."""
    from rayemb_ros.estimation.bundle import volume_grade_reasons
    from rayemb_ros.estimation.estimator import Estimator
    from rayemb_ros.estimation.trust import pose_grade

    registration = registration or InProcess()
    grade = PoseGrade(pose_grade(params).reasons + volume_grade_reasons(volume_spec))
    out.mkdir(parents=True, exist_ok=True)
    progress = dict(desc="replay", unit="frame", file=sys.stderr)
    done = registration.register(bag, volume_spec, params, topics, out, progress)
    records, volume, estimator = done.records, done.volume, done.estimator
    write_estimates(out / "estimates.jsonl", records)
    evaluation = evaluate(records, volume, candidates_known=registration.knows_refused_poses, refine=params.refine)
    if done.frame_by_frame is not None:
        write_estimates(out / "estimates_frame_by_frame.jsonl", done.frame_by_frame)
    if evaluation is not None:
        evaluation.metrics["pose_grade"] = {"grade": grade.name, "reasons": list(grade.reasons)}
        if done.frame_by_frame is not None:
            scratch = evaluate(done.frame_by_frame, volume, registration.knows_refused_poses, params.refine)
            evaluation.metrics["tracking"] = tracking_comparison(records, evaluation.metrics, scratch.metrics)
        (out / "metrics.json").write_text(json.dumps(json_safe(evaluation.metrics), indent=1, allow_nan=False) + "\n")
    if estimator is None and any(len(r.landmarks) for r in records):
        estimator = Estimator(params)  # for the heatmaps only, once the registration is done
        estimator.set_volume(volume, volume_spec)
    facts = {"bag": str(bag), "volume": volume_spec, "mode": registration.mode,
             "refinement": "on" if params.refine else "off", "image intensity": params.image_intensity,
             "dewarp model": params.dewarp or "none",
             "device": params.device, "checkpoint": params.checkpoint or "the shipped default",
             "pose grade": str(grade)}
    report = _write_report(out, bag, topics, params, records, evaluation, volume, estimator, facts,
                           list(registration.notes))
    return Replay(records, evaluation, out, report, grade)


def tracking_comparison(records: list[FrameRecord], tracked: dict[str, Any], scratch: dict[str, Any]) -> dict[str, Any]:
    """The tracked run beside the frame-by-frame one on the same frames: how many frames came
    from a prior and how many fell back, the prior path's own latency, and both runs' accuracy
    and latency (``metrics.json``'s ``tracking``)."""
    prior = [r for r in records if r.mode == "prior"]

    def summary(m: dict[str, Any]) -> dict[str, Any]:
        return {k: m[k] for k in ("frames_ok", "mtre_mm", "gfr_percent", "latency_ms")} | {
            "published_over_10_mm": m["trust"]["accepted_over_threshold"] if "trust" in m else None}

    return {
        "frames_prior": len(prior),
        "frames_fallback": sum(bool(r.fallback) for r in records),
        "prior_published_over_10_mm": sum(1 for r in prior if r.ok and (m := tracked["per_frame_mtre_mm"][r.index]) is not None
                                          and m > GFR_TRUST_MM),
        "latency_prior_ms": latency_summary([r.latency_ms for r in prior]) if prior else None,
        "latency_p50_ratio": tracked["latency_ms"]["p50"] / scratch["latency_ms"]["p50"],
        "tracked": summary(tracked),
        "frame_by_frame": summary(scratch),
    }


def summary_lines(records: list[FrameRecord], evaluation: Evaluation | None) -> list[str]:
    """The printed summary: frames, mTRE median and 95th percentile, GFR@10, latency."""
    ok = sum(r.ok for r in records)
    unusable = sum(r.latency_ms is None for r in records)
    lines = [f"frames: {len(records)} ({ok} ok, {len(records) - ok - unusable} refused, {unusable} unusable)"]
    if evaluation is not None:
        m = evaluation.metrics
        lines.append(f"mTRE over {m['frames_evaluated']} frames with ground truth (no pose = failure): "
                     f"median {mm(m['mtre_mm']['p50'])}, 95th {mm(m['mtre_mm']['p95'])}")
        lines.append(f"mTRE over the {m['frames_posed']} posed frames: median {mm(m['mtre_posed_mm']['p50'])}, "
                     f"95th {mm(m['mtre_posed_mm']['p95'])}")
        lines.append(f"GFR@10: {m['gfr_percent']['10']:.1f} %   GFR@5: {m['gfr_percent']['5']:.1f} %")
        c = m["covariance"]
        if c["frames"]:
            lines.append(f"covariance: {c['inside_95_percent']:.0f} % of {c['frames']} accepted poses inside their 95 % "
                         f"region (terciles of predicted uncertainty: "
                         f"{' / '.join(f'{t:.0f}' for t in c['terciles_inside_95_percent'])} %)")
    else:
        lines.append("no ground truth in the bag: no accuracy metrics")
    latency = [r.latency_ms for r in records if r.latency_ms is not None]
    if latency:
        lines.append(f"latency: p50 {ms(np.percentile(latency, 50))}, p95 {ms(np.percentile(latency, 95))}")
    tracking = evaluation.metrics.get("tracking") if evaluation is not None else None
    if tracking:
        scratch, prior_ms = tracking["frame_by_frame"], tracking["latency_prior_ms"]
        lines.append(f"tracking: {tracking['frames_prior']} of {len(records)} frames from the prior "
                     f"({tracking['frames_fallback']} fell back to the full path)"
                     + (f", prior path latency p50 {ms(prior_ms['p50'])}" if prior_ms else "")
                     + f"; latency p50 {tracking['latency_p50_ratio']:.2f} x frame by frame")
        lines.append(f"frame by frame, same frames: median {mm(scratch['mtre_mm']['p50'])}, 95th "
                     f"{mm(scratch['mtre_mm']['p95'])}, GFR@10 {scratch['gfr_percent']['10']:.1f} %, "
                     f"latency p50 {ms(scratch['latency_ms']['p50'])}")
    roundtrip = [r.extra["roundtrip_ms"] for r in records if "roundtrip_ms" in r.extra]
    if roundtrip:  # through the node: from publishing the image to receiving the node's answer
        lines.append(f"end to end (image published -> TF / verdict received): p50 {ms(np.percentile(roundtrip, 50))}, "
                     f"p95 {ms(np.percentile(roundtrip, 95))}")
    return lines
