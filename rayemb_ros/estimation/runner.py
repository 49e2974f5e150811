"""The live registration loop behind the ROS node, without ROS.

One worker thread owns the estimator: it runs volume loads and estimates one at a time, so
the estimator needs no locking and a load never races an estimate. Callers (the node's
subscription and service callbacks) only hand work over and return at once:

* frames go into a one-slot mailbox: a newer frame replaces an unprocessed one (counted as
  stale), so a slow estimate never builds a queue and the newest frame always wins;
* loads go into a queue that the worker serves before the next frame; the caller may wait.

Every event (rejection, drop, load, estimate) updates one ``Health`` record, which the node
turns into a log line and a diagnostics message.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field, replace
from enum import IntEnum
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
from jaxtyping import Float

from rayemb_ros.io.camera_info import CAMERA_INFO_HISTORY, NO_CAMERA_INFO, camera_info_for_image
from rayemb_ros.io.images import ImageError
from rayemb_ros.imaging.intensity import estimator_image
from rayemb_ros.params import Params
from rayemb_ros.estimation.bundle import BundleError, is_bundle, read_record
from rayemb_ros.estimation.result import Estimate, PoseGrade, VolumeInfo
from rayemb_ros.estimation.tracking import MAX_PRIOR_AGE_S, Prior, Tracker


@dataclass(frozen=True)
class PairingWaits:
    """How long a frame waits for the CameraInfo with its stamp (seconds).

    An image and its CameraInfo come on two topics, in either order (image_transport sends
    the image first). While the newest CameraInfo is older than the frame (its own may still
    be on its way), the frame waits ``unpaired_s`` for it, then takes the newest; or
    ``paired_s``, once images have been finding CameraInfos with their own stamps (a camera
    that sends one per image, as the contract's bags do). Then the newest is another frame's,
    and its K may differ (zoom, SDD): a wrong K gives a wrong pose that looks right. 50 ms was
    not always enough for the executor to deliver it on a loaded machine. If it has still not
    come (lost: the subscription is best-effort), the newest stands in only when the
    remembered CameraInfos show one K (io.camera_info.camera_info_for_image); otherwise the
    frame is refused. A node test once published, for an image whose CameraInfo never
    arrived, the pose from the previous image's K: 12 mm from the right one. ``first_s``: the
    wait for the very first CameraInfo.
    """

    unpaired_s: float = 0.05
    paired_s: float = 1.0
    first_s: float = 1.0


# How the diagnostics message of a refused frame begins (then the reason).
FRAME_REJECTED = "frame rejected: "


class PathRefused(ValueError):
    """A volume path outside ``volume_root``."""


def confine(path: str, root: str) -> str:
    """The resolved path of a volume request, or PathRefused when it leaves ``root``.

    Symlinks and '..' are resolved before the check, so neither can escape; a relative path
    is taken relative to ``root``. ``example`` (the bundled CT) is always allowed.
    """
    if path == "example":
        return path
    if not path.strip():
        raise PathRefused("empty volume path")
    root_dir = Path(root).expanduser().resolve()
    resolved = (root_dir / Path(path).expanduser()).resolve()
    if not resolved.is_relative_to(root_dir):
        raise PathRefused(f"refused {path!r}: outside volume_root {str(root_dir)!r} (after resolving links and '..')")
    return str(resolved)


def confine_bundle_ct(path: str, root: str) -> None:
    """PathRefused when ``path`` is a prepared bundle whose CT lies outside ``root``: the CT a
    bundle names must be confined as a requested path is. A bundle that cannot be read is
    left to the load, which says why."""
    if not is_bundle(path):
        return
    try:
        ct = read_record(path).ct_path
    except BundleError:
        return
    try:
        confine(ct, root)
    except PathRefused as exc:
        raise PathRefused(f"refused bundle {path!r}: its CT {ct!r} is outside volume_root") from exc


class Level(IntEnum):
    """Severity, numbered as diagnostic_msgs/DiagnosticStatus levels."""

    OK = 0
    WARN = 1
    ERROR = 2


@dataclass(frozen=True)
class Health:
    """The node's state as reported on /diagnostics; ``level``/``message`` describe the last event."""

    level: Level = Level.WARN
    message: str = "no volume loaded: call ~/load_volume"
    volume: VolumeInfo | None = None
    frames_received: int = 0
    frames_estimated: int = 0
    poses_ok: int = 0
    dropped_stale: int = 0
    dropped_no_volume: int = 0
    rejected: int = 0
    last_rejection: str = ""
    last_latency_ms: float = math.nan
    last_estimate_ms: float = math.nan
    last_inliers: int = 0
    last_reprojection_error_px: float = math.nan
    pose_grade: PoseGrade | None = None  # the estimator's; None = not known (reported as such)
    last_mode: str = ""  # how the last estimated frame was registered: "prior" or "full"
    last_fallback: str = ""  # given a prior, why the last frame was registered from scratch
    poses_from_prior: int = 0
    priors_received: int = 0  # poses from outside (~/pose_prior)
    priors_ignored: int = 0  # ... ignored: another frame_id, or stale


@dataclass
class Frame:
    """A decoded image waiting for the worker. ``tag`` comes back untouched with its result."""

    image: Float[np.ndarray, "H W"]
    stamp_ns: int
    received_s: float
    tag: Any = None


@dataclass
class Result:
    frame: Frame
    K: Float[np.ndarray, "3 3"]
    estimate: Estimate
    latency_ms: float


class EstimatorLike(Protocol):
    has_volume: bool
    pose_grade: PoseGrade
    scene: Any

    def load_volume(self, path: str) -> VolumeInfo: ...

    def estimate(self, image: np.ndarray, K: np.ndarray, prior: Prior | None = None) -> Estimate: ...


@dataclass
class _Load:
    path: str
    done: threading.Event = field(default_factory=threading.Event)
    info: VolumeInfo | None = None
    error: Exception | None = None


@dataclass
class _CameraInfo:
    K: Float[np.ndarray, "3 3"]
    height: int
    width: int


class Runner:
    """Feeds frames and loads to an estimator on one worker thread.

    ``on_result`` gets each estimate (ok or not); ``on_event`` gets the Health after each
    event and whether the event deserves a log line. Both run on the worker thread, except
    for rejections and drops, which are reported on the caller's thread.
    """

    def __init__(
        self,
        estimator: EstimatorLike,
        params: Params,
        on_result: Callable[[Result], None],
        on_event: Callable[[Health, bool], None],
        waits: PairingWaits = PairingWaits(),
    ):
        self._estimator = estimator
        self._waits = waits
        self._params = params
        self._on_result = on_result
        self._on_event = on_event
        self._cv = threading.Condition()
        self._frame: Frame | None = None
        self._loads: deque[_Load] = deque()
        self._infos: OrderedDict[int, _CameraInfo] = OrderedDict()
        self._infos_per_image = False  # the last frame found the CameraInfo with its stamp
        self._waiting_for: int | None = None  # the stamp whose CameraInfo the worker waits for
        self._closed = False
        # Frames in order, each with the last trusted pose as its prior (params.tracking).
        self._tracker = Tracker(estimator) if params.tracking else None
        self._outside: Prior | None = None  # a pose from outside, for the worker to hand to the tracker
        self._newest_stamp_ns: int | None = None  # of the frames received
        self._last_ignored = ""  # why the last pose from outside was ignored (logged when it changes)
        self._health = Health(pose_grade=estimator.pose_grade)
        self._thread = threading.Thread(target=self._work, name="rayemb-worker", daemon=True)
        self._thread.start()

    @property
    def waiting_for_camera_info(self) -> int | None:
        """The stamp of the frame the worker is holding until its CameraInfo comes, if any."""
        with self._cv:
            return self._waiting_for

    @property
    def health(self) -> Health:
        with self._cv:
            return self._health

    # --- called from the node's callbacks: quick, never wait for the worker ---

    def camera_info(self, stamp_ns: int, K: Float[np.ndarray, "3 3"], height: int, width: int) -> None:
        with self._cv:
            self._infos[stamp_ns] = _CameraInfo(K, height, width)
            self._infos.move_to_end(stamp_ns)
            while len(self._infos) > CAMERA_INFO_HISTORY:
                self._infos.popitem(last=False)
            self._cv.notify_all()  # a frame may be waiting for this one

    def submit(self, frame: Frame) -> None:
        """Queue a frame for estimation, replacing one still waiting."""
        with self._cv:
            self._count(frames_received=1)
            self._newest_stamp_ns = max(frame.stamp_ns, self._newest_stamp_ns or frame.stamp_ns)
            if self._health.volume is None:
                self._count(dropped_no_volume=1)
                # One line, not one per frame: the count is on /diagnostics.
                first = self._health.dropped_no_volume == 1
                self._event(Level.WARN, "frame dropped: no volume loaded (call ~/load_volume)", log=first)
            else:
                if self._frame is not None:
                    self._count(dropped_stale=1)
                self._frame = frame
                self._cv.notify()

    def pose_prior(self, T_ct_source: Float[np.ndarray, "4 4"], stamp_ns: int, frame_id: str) -> None:
        """A pose from outside (the C-arm's angle readout, the robot's kinematics): it starts
        tracking where no trusted pose is recent. Ignored, with a diagnostics line, when it is
        in another frame than ``ct_frame``, older than the frames by more than a prior may be
        (MAX_PRIOR_AGE_S), or when tracking is off."""
        with self._cv:
            self._count(priors_received=1)
            newest = self._newest_stamp_ns
            if self._tracker is None:
                why = "tracking is off"
            elif frame_id != self._params.ct_frame:
                why = f"its frame_id {frame_id!r} is not {self._params.ct_frame!r}"
            elif newest is not None and newest - stamp_ns > MAX_PRIOR_AGE_S * 1e9:
                why = f"stale: {(newest - stamp_ns) / 1e9:.1f} s older than the newest frame"
            else:
                self._outside = Prior.outside(np.asarray(T_ct_source, dtype=np.float64), stamp_ns)
                return
            self._count(priors_ignored=1)
            # A line when the reason changes, not one per message: the count is on /diagnostics.
            message = f"pose_prior ignored: {why.split(':')[0]}"
            self._event(Level.WARN, f"pose_prior ignored: {why}", log=message != self._last_ignored)
            self._last_ignored = message

    def reject(self, reason: str) -> None:
        """Report a received frame that cannot be used."""
        with self._cv:
            self._count(frames_received=1)
            self._reject(reason)

    def submit_load(self, path: str) -> _Load:
        """Queue a volume load and return at once (wait on ``done``); PathRefused at once."""
        with self._cv:
            try:
                resolved = confine(path, self._params.volume_root)
                confine_bundle_ct(resolved, self._params.volume_root)
                load = _Load(resolved)
            except PathRefused as exc:
                self._event(Level.WARN, str(exc), log=True)
                raise
            self._loads.append(load)
            self._cv.notify()
        return load

    def load_volume(self, path: str) -> VolumeInfo:
        """Load (or replace) the volume and wait for it; raises PathRefused or what the
        estimator raised."""
        load = self.submit_load(path)
        while not load.done.wait(0.2):
            if self._closed:  # do not hold the caller (a service thread) past shutdown
                raise RuntimeError("shutting down")
        if load.error is not None:
            raise load.error
        assert load.info is not None
        return load.info

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the worker after its current job (idempotent); waiting callers are released."""
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._thread.join(timeout_s)

    # --- the worker ---

    def _work(self) -> None:
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._closed or self._loads or self._frame is not None)
                if self._closed:
                    break
                if self._loads:  # loads first: a client is waiting on each
                    load, frame = self._loads.popleft(), None
                else:
                    load, frame, self._frame = None, self._frame, None
            try:
                if load is not None:
                    self._load(load)
                elif frame is not None:
                    self._estimate(frame)
            except Exception as exc:  # a bug must not kill the worker: report it and go on
                with self._cv:
                    self._event(Level.ERROR, f"internal error: {type(exc).__name__}: {exc}", log=True)

    def _load(self, load: _Load) -> None:
        try:
            load.info = self._estimator.load_volume(load.path)
        except Exception as exc:
            load.error = exc
        with self._cv:
            if load.info is not None:
                if self._tracker is not None:
                    self._tracker.reset()  # poses of the CT before mean nothing now
                    self._outside = None
                grade = self._estimator.pose_grade  # a bundle's self-check has its say
                self._health = replace(self._health, volume=load.info, pose_grade=grade)
                info = load.info
                checked = f", self-check {info.self_check}" if info.self_check else ""
                weights = f", weights {info.weights}" if info.weights else ""
                self._event(
                    Level.OK if grade.navigation else Level.WARN,
                    f"volume loaded: {info.path} ({info.num_landmarks} landmarks, {info.load_seconds:.1f} s{weights}"
                    f"{checked}); poses {grade}",
                    log=True,
                )
            else:
                if not self._estimator.has_volume:
                    self._health = replace(self._health, volume=None)
                self._event(Level.WARN, f"load_volume {load.path!r} failed: {load.error}", log=True)
        load.done.set()

    def _camera_info_for(self, stamp_ns: int) -> _CameraInfo | str:
        """The CameraInfo with the frame's stamp, else the newest one; or why the frame gets
        none. When CameraInfos have been coming one per image and their K changes, the newest
        is another image's, whose K would give a wrong pose that looks right: a frame whose
        own CameraInfo was lost (best-effort delivery) or is later than the wait is refused."""
        with self._cv:
            if not self._infos:
                wait_s = self._waits.first_s
            elif next(reversed(self._infos)) < stamp_ns:
                wait_s = self._waits.paired_s if self._infos_per_image else self._waits.unpaired_s
            else:
                wait_s = 0.0
            self._waiting_for = stamp_ns
            self._cv.wait_for(lambda: stamp_ns in self._infos or self._closed, wait_s)
            self._waiting_for = None
            info, self._infos_per_image = camera_info_for_image(
                self._infos.get(stamp_ns), list(self._infos.values()), self._infos_per_image, stamp_ns,
                K_of=lambda info: info.K,
            )
            return f"{NO_CAMERA_INFO} received yet on the camera_info topic" if info is None else info

    def _estimate(self, frame: Frame) -> None:
        info = self._camera_info_for(frame.stamp_ns)
        if isinstance(info, str):
            with self._cv:
                self._reject(info)
            return
        height, width = frame.image.shape
        if (info.height, info.width) not in ((height, width), (0, 0)):
            with self._cv:
                self._reject(f"image is {width}x{height} but its CameraInfo is {info.width}x{info.height}")
            return
        try:
            image = estimator_image(frame.image, self._params.image_intensity, self._params.dewarp)
        except ImageError as exc:
            with self._cv:
                self._reject(str(exc))
            return
        if self._tracker is None:
            estimate = self._estimator.estimate(image, info.K)
        else:
            with self._cv:
                outside, self._outside = self._outside, None
            if outside is not None:
                self._tracker.seed(outside)
            estimate = self._tracker.estimate(image, info.K, frame.stamp_ns)
        latency_ms = (time.monotonic() - frame.received_s) * 1e3
        self._on_result(Result(frame, info.K, estimate, latency_ms))
        with self._cv:
            self._count(frames_estimated=1, poses_ok=int(estimate.ok),
                        poses_from_prior=int(estimate.ok and estimate.mode == "prior"))
            self._health = replace(
                self._health,
                last_mode=estimate.mode,
                last_fallback=estimate.fallback,
                last_latency_ms=latency_ms,
                last_estimate_ms=estimate.latency_ms,
                last_inliers=estimate.num_inliers,
                last_reprojection_error_px=estimate.reprojection_error_px,
            )
            if estimate.ok:
                self._event(
                    Level.OK,
                    f"pose ok ({estimate.mode}): {estimate.num_inliers} inliers, "
                    f"{estimate.reprojection_error_px:.2f} px, {latency_ms:.0f} ms",
                    log=False,
                )
            else:
                self._event(Level.WARN, f"pose refused: {estimate.reason}", log=False)

    # --- Health bookkeeping (callers hold self._cv) ---

    def _count(self, **increments: int) -> None:
        self._health = replace(self._health, **{k: getattr(self._health, k) + v for k, v in increments.items()})

    def _reject(self, reason: str) -> None:
        self._count(rejected=1)
        self._health = replace(self._health, last_rejection=reason)
        self._event(Level.WARN, f"{FRAME_REJECTED}{reason}", log=True)

    def _event(self, level: Level, message: str, log: bool) -> None:
        self._health = replace(self._health, level=level, message=message)
        # Reported under the lock so that listeners see events in order.
        self._on_event(self._health, log)
