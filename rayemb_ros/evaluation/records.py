"""What `rayemb replay` keeps of each frame, however it was registered (in process or by the
node over DDS), and its line in ``estimates.jsonl`` (../shared/CONTRACT.md, "`rayemb replay`
output"). Plain data, no ROS, no torch.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from jaxtyping import Float

from rayemb_ros.io.bags import Frame
from rayemb_ros.estimation.result import Estimate, Landmarks


@dataclass
class FrameRecord:
    """One image of a bag and what became of it.

    ``T_initial`` is the PnP pose before refinement, also for a refused frame when PnP found
    one; None when PnP found none or when it is not known (the node publishes final poses
    only). ``latency_ms`` is None for a frame that never reached the estimator (it could not
    be decoded, or had no CameraInfo).
    """

    index: int
    stamp_ns: int
    ok: bool
    reason: str
    T_ct_source: Float[np.ndarray, "4 4"] | None  # mm; None unless ok
    T_initial: Float[np.ndarray, "4 4"] | None
    landmarks: Landmarks
    num_inliers: int
    reprojection_error_px: float
    latency_ms: float | None
    K: Float[np.ndarray, "3 3"] | None
    T_gt: Float[np.ndarray, "4 4"] | None  # mm; None when the bag has no ground truth for it
    extra: dict[str, float] = field(default_factory=dict)  # mode-specific numbers, e.g. round-trip time
    covariance: Float[np.ndarray, "6 6"] | None = None  # of an accepted pose: mm and rad, ct axes
    mode: str = "full"  # "full" (registered from scratch) or "prior"
    fallback: str = ""  # given a prior, why the frame was registered from scratch instead

    @classmethod
    def of_estimate(cls, index: int, frame: Frame, estimate: Estimate) -> FrameRecord:
        return cls(
            index=index,
            stamp_ns=frame.stamp_ns,
            ok=estimate.ok,
            reason=estimate.reason,
            T_ct_source=estimate.T_ct_source if estimate.ok else None,
            T_initial=estimate.T_initial,
            landmarks=estimate.landmarks,
            num_inliers=estimate.num_inliers,
            reprojection_error_px=estimate.reprojection_error_px,
            latency_ms=estimate.latency_ms,
            K=frame.K,
            T_gt=frame.T_ct_source_gt,
            covariance=estimate.covariance if estimate.ok else None,
            mode=estimate.mode,
            fallback=estimate.fallback,
        )

    @classmethod
    def unusable(cls, index: int, frame: Frame, reason: str) -> FrameRecord:
        """A frame the estimator never saw."""
        return cls(index, frame.stamp_ns, False, reason, None, None, Landmarks.empty(), 0, math.nan, None,
                   frame.K, frame.T_ct_source_gt)

    def to_json(self) -> dict[str, Any]:
        """The contract's fields (mm; ``covariance`` mm and rad), then ours: ``T_initial``,
        ``reprojection_error_px`` and ``extra``'s. Non-finite numbers become null (JSON has no NaN)."""
        out: dict[str, Any] = {
            "index": self.index,
            "stamp_ns": self.stamp_ns,
            "ok": self.ok,
            "T_ct_source": _matrix(self.T_ct_source if self.ok else None),
            "num_landmarks": len(self.landmarks),
            "num_inliers": self.num_inliers,
            "latency_ms": finite_or_none(self.latency_ms),
        }
        if not self.ok:
            out["reason"] = self.reason
        out["mode"] = self.mode
        if self.fallback:
            out["fallback"] = self.fallback
        if self.ok and self.covariance is not None:
            out["covariance"] = np.asarray(self.covariance, dtype=np.float64).tolist()
        out["T_initial"] = _matrix(self.T_initial)
        out["reprojection_error_px"] = finite_or_none(self.reprojection_error_px)
        out.update({k: finite_or_none(v) for k, v in self.extra.items()})
        return out


def finite_or_none(x: float | None) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def _matrix(T: np.ndarray | None) -> list[list[float]] | None:
    return None if T is None else np.asarray(T, dtype=float).tolist()


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None, recursively (strict JSON)."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return finite_or_none(float(value))
    return value


def write_estimates(path: str | Path, records: Iterable[FrameRecord]) -> Path:
    path = Path(path)
    with path.open("w") as f:
        for record in records:
            f.write(json.dumps(record.to_json(), allow_nan=False) + "\n")
    return path
