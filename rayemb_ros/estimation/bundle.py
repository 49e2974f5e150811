"""A prepared patient (``rayemb prepare``): a folder with everything that depends only on the
CT, made once before surgery, and what the self-check found.

    BUNDLE/bundle.json    the record below (written last: a folder without it is no bundle)
    BUNDLE/weights.pt     the encoder weights the scene was made with (fine-tuned or copied)
    BUNDLE/scene.npz      landmark candidates and their template subspaces
    BUNDLE/self_check/    the simulated frames, their estimates and the report page

The node's ~/load_volume and `--volume` of `rayemb replay` take a bundle as they take a CT. A
bundle is refused, with one line and nothing half-loaded, when its CT file changed, its
weights are missing or not the ones recorded, or it was made with other settings. Its poses
are navigation-grade only if its self-check passed with the default trust gates.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from rayemb_ros.estimation.trust import LOOSENED_BY
from rayemb_ros.geometry.volume import VolumeError, source_digest
from rayemb_ros.params import Params

RECORD = "bundle.json"
WEIGHTS = "weights.pt"
SCENE = "scene.npz"
SELF_CHECK = "self_check"
FORMAT = 1
# The settings a scene depends on: a bundle made with others does not fit the estimator.
SCENE_SETTINGS = ("num_landmarks", "num_templates", "templates_per_landmark", "min_inliers")
# The self-check's pass mark (mm, %): what a navigation-grade CT must reach on its own frames.
PASS_MEDIAN_MM = 1.5
PASS_GFR10_PERCENT = 5.0


class BundleError(VolumeError):
    """A bundle that cannot be used; the message says why in one line."""


@dataclass(frozen=True)
class SelfCheck:
    """The expected accuracy for this patient: simulated held-out frames of its CT (the test
    renderer, noise, collimation), registered with the bundle; percentiles over all frames,
    a refused frame counting as a failure."""

    frames: int
    median_mm: float | None  # None: at least half the frames refused
    p95_mm: float | None
    gfr10_percent: float
    refused: int
    published_over_10mm: int
    default_gates: bool  # run with the default trust gates and full refinement
    seed: int

    @property
    def passed(self) -> bool:
        return (self.median_mm is not None and self.median_mm <= PASS_MEDIAN_MM
                and self.gfr10_percent <= PASS_GFR10_PERCENT and self.published_over_10mm == 0)

    @property
    def verdict(self) -> str:
        if self.passed:
            return "pass" if self.default_gates else "pass, but not with the default trust gates"
        return (f"fail: median {_mm(self.median_mm)}, GFR@10 {self.gfr10_percent:.1f} %, "
                f"{self.published_over_10mm} published > 10 mm (a pass needs median <= {PASS_MEDIAN_MM} mm, "
                f"GFR@10 <= {PASS_GFR10_PERCENT:g} %, none published > 10 mm)")


def _mm(x: float | None) -> str:
    return "no pose" if x is None else f"{x:.2f} mm"


@dataclass(frozen=True)
class Record:
    """bundle.json."""

    ct_path: str  # absolute, or 'example'
    ct_digest: str  # of the CT file(s) as they were read
    weights_digest: str  # checkpoint.weights_digest of weights.pt
    weights_from: str  # the checkpoint it started from
    finetune_steps: int
    settings: dict[str, Any]  # SCENE_SETTINGS
    software: str
    self_check: SelfCheck | None = None
    format: int = FORMAT
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        if self.self_check is not None:
            out["self_check"] |= {"passed": self.self_check.passed, "verdict": self.self_check.verdict}
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Record:
        check = data.get("self_check")
        known = {f.name for f in fields(SelfCheck)}
        return cls(**{**data, "self_check": None if check is None else SelfCheck(**{k: check[k] for k in known})})

    @property
    def grade_reasons(self) -> tuple[str, ...]:
        """Why poses from this bundle are not navigation-grade (none: they may be)."""
        if self.self_check is None:
            return ("the bundle has no self-check",)
        if not self.self_check.passed:
            return (f"the bundle's self-check: {self.self_check.verdict}",)
        if not self.self_check.default_gates:
            return ("the bundle's self-check ran without the default trust gates",)
        return ()


def is_bundle(path: str | Path) -> bool:
    return Path(path).expanduser().is_dir() and (Path(path).expanduser() / RECORD).is_file()


def ct_of(spec: str) -> str:
    """The CT a volume spec names: a bundle's CT, else the spec itself."""
    return read_record(spec).ct_path if is_bundle(spec) else spec


def read_record(folder: str | Path) -> Record:
    """bundle.json of a bundle folder; BundleError when it cannot be read."""
    path = Path(folder).expanduser() / RECORD
    try:
        data = json.loads(path.read_text())
        if data.get("format") != FORMAT:
            raise BundleError(f"bundle {folder} has format {data.get('format')!r}; this software reads {FORMAT}")
        return Record.from_json(data)
    except BundleError:
        raise
    except Exception as exc:  # unreadable JSON, missing keys, wrong types
        raise BundleError(f"bundle {folder}: {path.name} cannot be read ({type(exc).__name__}: {exc})"
                          .splitlines()[0]) from exc


def write_record(folder: Path, record: Record) -> Path:
    """bundle.json, atomically: written last, it is what makes the folder a bundle."""
    path = folder / RECORD
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record.to_json(), indent=2) + "\n")
    tmp.replace(path)
    return path


def scene_settings(params: Params) -> dict[str, Any]:
    return {name: getattr(params, name) for name in SCENE_SETTINGS}


def default_gates(params: Params) -> bool:
    """Whether these settings judge poses as the defaults do (gates and full refinement)."""
    shipped = Params()
    return params.refine and params.refine_steps >= shipped.refine_steps and all(
        getattr(params, name) == getattr(shipped, name) for name in LOOSENED_BY)


def verify(folder: str | Path, record: Record, params: Params) -> None:
    """BundleError unless the bundle still is what its record says and fits ``params``."""
    folder = Path(folder).expanduser()
    if record.settings != scene_settings(params):
        theirs = ", ".join(f"{k} {v}" for k, v in record.settings.items())
        raise BundleError(f"bundle {folder} was made with other settings ({theirs}) than this estimator's: "
                          "prepare it again")
    try:
        digest = source_digest(record.ct_path)
    except VolumeError as exc:
        raise BundleError(f"bundle {folder}: its CT is gone ({exc})") from exc
    if digest != record.ct_digest:
        raise BundleError(f"bundle {folder}: its CT {record.ct_path} changed since the bundle was made: prepare it again")
    for name in (WEIGHTS, SCENE):
        if not (folder / name).is_file():
            raise BundleError(f"bundle {folder}: {name} is missing")


def save_scene(folder: Path, landmarks: np.ndarray, basis: np.ndarray) -> None:
    np.savez(folder / SCENE, landmarks=landmarks, basis=basis)


def load_scene(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(folder / SCENE) as z:
            return z["landmarks"], z["basis"]
    except Exception as exc:
        raise BundleError(f"bundle {folder}: {SCENE} cannot be read ({type(exc).__name__})") from exc


# The one CT the shipped weights' trust gates were validated on (docs/results.md).
VALIDATED_CT = "example"
NOT_SELF_CHECKED = ("the CT has no self-check: the gates were validated on the training CT only "
                    "(prepare this CT with `rayemb prepare`)")


def volume_grade_reasons(spec: str) -> tuple[str, ...]:
    """Why poses on the CT ``spec`` names are not navigation-grade, whatever the settings: a
    prepared bundle answers by its self-check; a plain CT other than the one the gates were
    validated on has none (on anatomy the encoder never saw, the gates have let poses > 10 mm
    off through: docs/results.md)."""
    if is_bundle(spec):
        return read_record(spec).grade_reasons
    return () if spec == VALIDATED_CT else (NOT_SELF_CHECKED,)
