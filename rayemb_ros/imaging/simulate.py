"""Simulated fluoroscopy (``rayemb simulate``): realistic frames of a CT with exact ground truth.

Per frame: a C-arm pose and detector over the clinical range (``poses``), a DRR (``render``;
diffdrr by default, so that test frames never come from nanodrr, the training and template
renderer), a random acquisition style (``fluoro``), then the image, its CameraInfo and the
ground-truth pose into a rosbag2 bag (``bags``).

Geometry and noise draw from separate streams of the seed: ``plan`` alone reproduces the
ground truth of a bag, whatever the renderer or image settings.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from jaxtyping import Float

from rayemb_ros.imaging import fluoro
from rayemb_ros.imaging.operating_room import (
    DISPLAYS, DISTORTION_LEVELS, Display, Distortion, Look, bone_anchors, low_dose, sample_instruments,
)
from rayemb_ros.geometry.camera import Detector
from rayemb_ros.geometry.poses import sample_detector, sample_poses
from rayemb_ros.geometry.trajectories import trajectory_poses
from rayemb_ros.geometry.volume import Volume
from rayemb_ros.params import ParamError

if TYPE_CHECKING:  # the bag code (rosbags) loads only when frames are made: `plan` needs none of it
    from rayemb_ros.io.bags import Frame

RENDERERS = ("diffdrr", "nanodrr")
# A fixed start keeps bags of one seed byte-identical; the frame period sets the replay rate.
START_NS = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z


@dataclass(frozen=True)
class Shot:
    """What one simulated frame is: the ground truth (pose, detector) and the look (style)."""

    T_ct_source: Float[np.ndarray, "4 4"]  # mm
    detector: Detector
    style: fluoro.FluoroStyle


def _streams(seed: int) -> tuple[np.random.Generator, np.random.Generator, np.random.Generator]:
    """Geometry, noise, and the operating room's draws: three streams of one seed (turning an
    operating-room effect on changes no geometry)."""
    geometry, noise, operating_room = np.random.default_rng(seed).spawn(3)
    return geometry, noise, operating_room


@dataclass(frozen=True)
class OperatingRoom:
    """What of the operating room a bag's frames show (``imaging.operating_room``); all off by default."""

    instruments: int = 0  # instruments per frame
    low_dose: bool = False
    display: str = "none"  # none | vendor | inverted
    distortion: str = "none"  # none | mild | strong

    def validated(self, intensity: str) -> OperatingRoom:
        """Self, or a ParamError that names what cannot work (with frames of ``intensity``)."""
        if self.instruments < 0:
            raise ParamError("instruments must be 0 or more")
        if self.display not in DISPLAYS or self.distortion not in ("none", *DISTORTION_LEVELS):
            raise ParamError(f"display must be one of {DISPLAYS}, distortion none or one of {list(DISTORTION_LEVELS)}")
        if self.display != "none" and intensity != "attenuation":
            raise ParamError("display processing makes a displayed frame: it needs attenuation intensity")
        return self

    def look(self, rng: np.random.Generator, anchors: Float[np.ndarray, "N 3"]) -> Look:
        """One frame's draws (instruments around ``anchors``, dose, display), in a fixed order."""
        rods = tuple(sample_instruments(rng, anchors, self.instruments)) if self.instruments else ()
        dose = low_dose(rng) if self.low_dose else None
        display = Display.sample(rng, inverted=self.display == "inverted") if self.display != "none" else None
        return Look(rods, dose, display)


def plan(volume: Volume, frames: int, seed: int, height: int, width: int,
         center: Float[np.ndarray, "3"] | None = None, trajectory: str = "none", fps: float = 10.0) -> list[Shot]:
    """The frames' poses, detectors and styles for a seed (deterministic), aimed at the CT's
    centre or at ``center`` (mm, ``ct``): independent views, or with ``trajectory`` (one of
    ``trajectories.TRAJECTORIES``) one sequence of one C-arm (one detector and style) moving
    between frames ``1 / fps`` s apart."""
    rng, _, _ = _streams(seed)
    aim = volume.center if center is None else np.asarray(center, dtype=np.float64)
    if trajectory == "none":
        return [Shot(T, sample_detector(rng, height, width), fluoro.sample_style(rng)) for T in sample_poses(rng, frames, aim)]
    poses = trajectory_poses(rng, trajectory, frames, fps, aim)
    detector, style = sample_detector(rng, height, width), fluoro.sample_style(rng)
    return [Shot(T, detector, style) for T in poses]


def _line_integrals(volume: Volume, renderer: str) -> Callable[[Shot], Float[np.ndarray, "H W"]]:
    from rayemb_ros.imaging import render  # torch and the renderers load only when frames are made

    if renderer not in RENDERERS:
        raise ValueError(f"renderer must be one of {RENDERERS}, got {renderer!r}")
    drr = render.DiffdrrRenderer(volume) if renderer == "diffdrr" else render.NanoRenderer(volume)
    return lambda shot: drr.render_np(shot.T_ct_source[None], shot.detector)[0]


def simulate_frames(
    volume: Volume,
    shots: list[Shot],
    seed: int,
    renderer: str = "diffdrr",
    intensity: str = "attenuation",
    encoding: str = "mono16",
    fps: float = 10.0,
    operating_room: OperatingRoom = OperatingRoom(),
) -> Iterator[Frame]:
    """Render and degrade the planned shots one at a time (lazily: bags stream to disk)."""
    from rayemb_ros.io.bags import Frame

    room = operating_room.validated(intensity)
    _, noise, room_rng = _streams(seed)
    render_one = _line_integrals(volume, renderer)
    distortion = Distortion.level(room.distortion) if room.distortion != "none" else None
    anchors = bone_anchors(volume) if room.instruments else None
    for i, shot in enumerate(shots):
        look = room.look(room_rng, anchors)
        metal = look.metal(shot.T_ct_source, shot.detector)
        image = look.shown(fluoro.apply(render_one(shot), look.styled(shot.style), noise, intensity, metal))
        if distortion is not None:
            image = distortion.apply(image)
        yield Frame(
            stamp_ns=START_NS + round(i * 1e9 / fps),
            image=image,
            K=shot.detector.K,
            T_ct_source_gt=shot.T_ct_source,
            encoding=encoding,
        )
