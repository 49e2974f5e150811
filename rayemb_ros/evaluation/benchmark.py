"""`rayemb benchmark`: the paper's table, RayEmb against its baselines, on frames anyone can
reproduce, headed by anatomy the encoder never saw.

Sets of simulated fluoroscopy frames (``simulate.plan`` + ``simulate.simulate_frames``:
clinical C-arm poses, diffdrr DRRs, realistic noise; 256 px wide on a 280 mm detector by
default) with seeds that training never draws (training uses ``default_rng([seed, step])``):

* ``new_patient_<S>`` (headline): a new patient made from the CT (``imaging.anatomy``,
  anatomy seeds 5001, 5002 by default: none drawn in training); the fixed-landmark baseline
  gets its 14 landmarks carried through the variant's map;
* ``example_mirrored`` (headline): the CT flipped left-right (``Volume.mirrored``), an anatomy
  neither network saw; the fixed-landmark baseline gets its landmarks mirrored with it;
* ``held_out_region``: frames aimed at the CT's lowest third, unseen only by weights trained
  with that region held out (``rayemb train --holdout-below-mm``; the shipped weights saw it);
* ``example``: the bundled chest CT, the CT the encoder and the fixed-landmark net were
  trained on (new poses, detectors, noise and renderer).
* ``example_cluttered``, ``example_distorted``, ``example_distorted_no_model``: the ``example``
  frames (the same poses, detectors and noise draws) as an operating room makes them
  (``imaging.operating_room``): three instruments, low dose and vendor display processing; an
  image intensifier's strong distortion, dewarped by its model (``imaging.intensity.dewarp``,
  as the node's ``dewarp`` parameter does) for every method; and the same distorted frames
  with no model, where a right answer is a refusal.

"Unseen" means variants of the CTs in reach. ``benchmark.json``'s top-level ``methods`` pool
every frame of the headline sets; each set has its own entry under ``sets``.

Each method sees the same frames; the two that need a start (``intensity``) get the same
initial poses (:class:`InitialError`). Methods:

* ``intensity``: intensity-based registration alone (:class:`refine.Refiner`: gradient NCC
  through nanodrr over the collimated field, a depth search, then ``--intensity-steps``
  gradient steps) from the perturbed ground truth;
* ``fixed_landmark``: :class:`~rayemb_ros.estimation.fixed_landmark.FixedLandmarkEstimator` (heatmaps, PnP);
* ``rayemb``: :class:`estimator.Estimator`, ``Params(refine=False, depth_search=False)``:
  landmarks and PnP alone, the paper's RayEmb without refinement;
* ``rayemb_refined``: the same with ``refine=True`` (``--refine-steps``).

A refused frame (``ok`` false) has no pose: mTRE = inf, a failure at every GFR threshold.
Rendered sets are cached under ``io.cache.cache_dir()``, keyed by CT content and settings.
``--dataset deepfluoro FILE`` runs the same methods on the DeepFluoro specimens instead.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from jaxtyping import Float
from scipy.spatial.transform import Rotation

from rayemb_ros.errors import InputError
from rayemb_ros.estimation.tracking import Tracker
from rayemb_ros.geometry.camera import invert_pose, world_to_camera
from rayemb_ros.learning.checkpoint import FIXED_LANDMARK_CHECKPOINT
from rayemb_ros.evaluation.metrics import TARGET_DEFINITION, accuracy_summary, frame_mtre, latency_summary, target_points
from rayemb_ros.params import Params
from rayemb_ros.evaluation.records import json_safe
from rayemb_ros.imaging.simulate import OperatingRoom
from rayemb_ros.io.cache import cached_arrays
from rayemb_ros.geometry.volume import Volume, load_volume

METHODS = ("intensity", "fixed_landmark", "rayemb", "rayemb_refined", "rayemb_tracked")
# The sequence set: the training CT seen by a C-arm orbiting at this frame rate, registered
# frame by frame (every other method) and tracked (``rayemb_tracked``: refined, each frame's
# prior the last trusted pose; estimation.tracking) on the same frames.
SEQUENCE_FPS = 15.0
# What the operating-room sets add to the training CT's frames (docs/operating_room.md).
CLUTTERED = OperatingRoom(instruments=3, low_dose=True, display="vendor")
DISTORTION = "strong"
DATASETS = ("deepfluoro",)


class BenchmarkError(InputError, RuntimeError):
    """A benchmark that cannot run; the message says why."""


@dataclass(frozen=True)
class InitialError:
    """The start of the intensity baseline: the ground truth perturbed the way a coarse
    initialisation (a nominal C-arm angle, a rough patient placement) is off. In the source
    frame, the CT is rotated about its own centre by a rotation vector with N(0, rot_deg)
    per axis, then shifted by N(0, inplane_mm) along x and y and N(0, depth_mm) along the
    beam. Typical start: ~30-40 mm mTRE."""

    rot_deg: float = 4.0
    inplane_mm: float = 15.0
    depth_mm: float = 30.0

    def perturb(
        self, T_gt: Float[np.ndarray, "4 4"], center_ct: Float[np.ndarray, "3"], rng: np.random.Generator
    ) -> Float[np.ndarray, "4 4"]:
        c = world_to_camera(T_gt, center_ct[None])[0]
        A = np.eye(4)  # true camera coordinates -> initial camera coordinates
        A[:3, :3] = Rotation.from_rotvec(np.deg2rad(rng.normal(0.0, self.rot_deg, 3))).as_matrix()
        A[:3, 3] = c - A[:3, :3] @ c + rng.normal(0.0, [self.inplane_mm, self.inplane_mm, self.depth_mm])
        return T_gt @ invert_pose(A)


@dataclass
class TestSet:
    name: str
    description: str
    volume: Volume
    images: list[Float[np.ndarray, "H W"]]  # attenuation
    K: Float[np.ndarray, "N 3 3"]
    T_gt: Float[np.ndarray, "N 4 4"]  # mm
    landmarks_ct: Float[np.ndarray, "14 3"] | None  # the fixed landmarks in this CT; None: unknown
    seed: int = 0  # of the frames, and of the intensity baseline's starts
    unseen: bool = False  # an anatomy the encoder never saw (a headline set)
    fps: float | None = None  # frames of one moving C-arm at this rate; None: independent views


@dataclass
class BenchmarkConfig:
    out: Path
    volume: str = "example"
    frames: int = 20  # per set
    width: int = 256  # square frames; detector 280 mm wide (poses.DetectorRange)
    seed: int = 1000  # the training CT's set; mirrored + 1000, region + 2000, new patients + 3000, + 4000, ...
    new_patients: tuple[int, ...] = (5001, 5002)  # anatomy seeds of the new patients (none drawn in training)
    region: bool = True  # the held-out region set
    operating_room: bool = True  # the training CT's frames cluttered and distorted (paired with its set)
    sequence: bool = True  # an orbit at SEQUENCE_FPS, tracked against frame by frame
    intensity_steps: int = 100  # the paper's DiffDRR registration runs 100 steps
    params: Params = field(default_factory=Params)
    initial: InitialError = field(default_factory=InitialError)
    fixed_landmark_checkpoint: Path = FIXED_LANDMARK_CHECKPOINT
    dataset: tuple[str, Path] | None = None
    progress: bool = True


# ------------------------------------------------------------------------------- test sets
def simulated_frames(
    volume: Volume, frames: int, seed: int, width: int, center: Float[np.ndarray, "3"] | None = None,
    room: OperatingRoom = OperatingRoom(), trajectory: str = "none",
) -> tuple[list[np.ndarray], Float[np.ndarray, "N 3 3"], Float[np.ndarray, "N 4 4"]]:
    """Realistic diffdrr test frames of a CT, aimed at its centre or ``center``, with what of
    the operating room ``room`` adds: independent views, or a ``trajectory`` at SEQUENCE_FPS
    (rendered once, then from the cache)."""
    from rayemb_ros.imaging.simulate import plan, simulate_frames

    def render() -> dict[str, np.ndarray]:
        shots = plan(volume, frames, seed, width, width, center, trajectory, SEQUENCE_FPS)
        images = np.stack([f.image for f in simulate_frames(volume, shots, seed, renderer="diffdrr", operating_room=room)])
        return {"images": images, "K": np.stack([s.detector.K for s in shots]),
                "T_gt": np.stack([s.T_ct_source for s in shots])}

    key = {"v": 1, "ct": volume.content_hash, "frames": frames, "seed": seed, "width": width, "renderer": "diffdrr"}
    if center is not None:
        key["center"] = np.round(center, 3).tolist()
    if room != OperatingRoom():
        key["operating_room"] = asdict(room)
    if trajectory != "none":
        key |= {"trajectory": trajectory, "fps": SEQUENCE_FPS}
    z = cached_arrays("benchmark", key, render)
    return list(z["images"]), z["K"], z["T_gt"]


def region_below(volume: Volume) -> tuple[float, Float[np.ndarray, "3"]]:
    """The held-out region of a CT: its lowest third in world z. The plane's height (mm; what
    ``rayemb train --holdout-below-mm`` takes) and the region's centre (mm, ``ct``)."""
    corners = volume.voxels_to_ct(np.array([[i, j, k] for i in (0, volume.shape[0] - 1)
                                            for j in (0, volume.shape[1] - 1) for k in (0, volume.shape[2] - 1)], float))
    low, high = corners[:, 2].min(), corners[:, 2].max()
    plane = low + (high - low) / 3.0
    centre = volume.center.copy()
    centre[2] = (low + plane) / 2.0
    return float(plane), centre


def simulated_sets(config: BenchmarkConfig, landmarks_ct: Float[np.ndarray, "14 3"]) -> Iterator[TestSet]:
    """The unseen-anatomy sets first (the headline), then the training CT. "Unseen" means
    variants of the CTs in reach: new patients made from the CT (imaging.anatomy, seeds no
    training draws), the CT mirrored, and a region of it (unseen only by weights trained
    with that region held out)."""
    from rayemb_ros.imaging.anatomy import make_variant

    volume = load_volume(config.volume)
    what = "the bundled CT" if config.volume == "example" else config.volume
    plane, region_centre = region_below(volume)
    for i, patient_seed in enumerate(config.new_patients):
        variant = make_variant(volume, patient_seed)
        seed = config.seed + 3000 + 1000 * i
        images, K, T_gt = simulated_frames(variant.volume, config.frames, seed, config.width)
        yield TestSet(f"new_patient_{patient_seed}", f"a new patient made from {what} (anatomy seed {patient_seed}, "
                      f"never used in training), frames seed {seed}", variant.volume, images, K, T_gt,
                      variant.carry(landmarks_ct), seed, unseen=True)
    seed, mirrored = config.seed + 1000, volume.mirrored()
    images, K, T_gt = simulated_frames(mirrored, config.frames, seed, config.width)
    yield TestSet("example_mirrored", f"{what} mirrored left-right (an anatomy never seen in training), seed {seed}",
                  mirrored, images, K, T_gt, volume.mirror_points(landmarks_ct), seed, unseen=True)
    if config.region:
        seed = config.seed + 2000
        images, K, T_gt = simulated_frames(volume, config.frames, seed, config.width, region_centre)
        yield TestSet("held_out_region", f"{what}, frames aimed at its lowest third (below z = {plane:.0f} mm: unseen "
                      f"only by weights trained with --holdout-below-mm {plane:.0f}; the shipped weights saw it), "
                      f"seed {seed}", volume, images, K, T_gt, landmarks_ct, seed)
    images, K, T_gt = simulated_frames(volume, config.frames, config.seed, config.width)
    yield TestSet("example", f"{what} (the training CT; unseen poses and noise), seed {config.seed}", volume, images,
                  K, T_gt, landmarks_ct, config.seed)
    if config.operating_room:
        yield from operating_room_sets(config, volume, what, landmarks_ct)
    if config.sequence:
        seed = config.seed + 7000
        images, K, T_gt = simulated_frames(volume, config.frames, seed, config.width, trajectory="orbit")
        yield TestSet("example_orbit", f"{what}, one C-arm orbiting at {SEQUENCE_FPS:g} fps (rayemb_tracked: each "
                      f"frame from the last trusted pose), seed {seed}", volume, images, K, T_gt, landmarks_ct, seed,
                      fps=SEQUENCE_FPS)


def operating_room_sets(config: BenchmarkConfig, volume: Volume, what: str,
                        landmarks_ct: Float[np.ndarray, "14 3"]) -> Iterator[TestSet]:
    """The ``example`` set's frames as an operating room makes them: the same seed, so the
    same poses, detectors and noise draws (the room's effects draw from a stream of their own)."""
    from rayemb_ros.imaging.intensity import dewarp
    from rayemb_ros.imaging.operating_room import Distortion

    seed, paired = config.seed, f"paired with example (seed {config.seed})"
    images, K, T_gt = simulated_frames(volume, config.frames, seed, config.width, room=CLUTTERED)
    yield TestSet("example_cluttered", f"{what}, {CLUTTERED.instruments} instruments, low dose, vendor display "
                  f"processing; {paired}", volume, images, K, T_gt, landmarks_ct, seed)
    distorted = OperatingRoom(distortion=DISTORTION)
    images, K, T_gt = simulated_frames(volume, config.frames, seed, config.width, room=distorted)
    config.out.mkdir(parents=True, exist_ok=True)
    model = Distortion.level(DISTORTION).save(config.out / f"dewarp_{DISTORTION}_{config.width}px.npz",
                                              config.width, config.width)
    yield TestSet("example_distorted", f"{what}, an image intensifier's {DISTORTION} distortion, every frame "
                  f"dewarped by its model ({model.name}); {paired}", volume,
                  [dewarp(image, str(model)) for image in images], K, T_gt, landmarks_ct, seed)
    yield TestSet("example_distorted_no_model", f"{what}, the same {DISTORTION} distortion with no dewarp model "
                  f"(a refusal is the right answer); {paired}", volume, images, K, T_gt, landmarks_ct, seed)


def deepfluoro_sets(path: Path, frames: int) -> Iterator[TestSet]:
    """The first ``frames`` frames of each DeepFluoro specimen (the fixed-landmark net knows
    only the bundled chest CT's landmarks: it is not applicable there)."""
    try:
        from rayemb_ros.io.deepfluoro import DeepFluoro, DeepFluoroError
    except ImportError as exc:
        raise BenchmarkError(f"deepfluoro loader not available ({exc})") from exc
    try:
        with DeepFluoro(path) as data:
            for specimen in data.specimens:
                shots = [data.frame(specimen, i) for i in data.frame_indices(specimen)[:frames]]
                if not shots:
                    continue
                yield TestSet(
                    f"deepfluoro_{specimen}", f"DeepFluoro specimen {specimen} ({path})", data.volume(specimen),
                    [s.image for s in shots], np.stack([s.K for s in shots]),
                    np.stack([s.T_ct_source for s in shots]), None, unseen=True,
                )
    except DeepFluoroError as exc:
        raise BenchmarkError(str(exc)) from exc


# ------------------------------------------------------------------------------- methods
@dataclass
class Outcome:
    """One method on one frame."""

    T: Float[np.ndarray, "4 4"] | None  # None: no pose (refused)
    latency_ms: float
    reason: str = ""  # why there is no pose
    mode: str = ""  # RayEmb's: registered from a prior or from scratch (estimation.tracking)


Method = Callable[[int], Outcome]  # frame index -> outcome, for the current set


class Methods:
    """The four methods, built once, pointed at one test set after another."""

    def __init__(self, config: BenchmarkConfig):
        from rayemb_ros.estimation.estimator import Estimator
        from rayemb_ros.estimation.fixed_landmark import FixedLandmarkEstimator

        self.config = config
        self.fixed = FixedLandmarkEstimator(config.fixed_landmark_checkpoint, config.params.device)
        self.rayemb = Estimator(replace(config.params, refine=False, depth_search=False))
        self.rayemb_refined = Estimator(replace(config.params, refine=True))
        self.device = str(self.rayemb.device)

    def for_set(self, test: TestSet, initial: Float[np.ndarray, "N 4 4"]) -> dict[str, Method | str]:
        """Each method's per-frame call on this set, or why it does not apply."""
        from rayemb_ros.estimation.refine import Refiner

        for est in (self.rayemb, self.rayemb_refined):
            est.set_volume(test.volume, test.name)
        refiner = Refiner(test.volume, self.rayemb.device)

        def intensity(i: int, steps: int = self.config.intensity_steps) -> Outcome:
            started = time.perf_counter()
            T = refiner.refine(test.images[i], test.K[i], initial[i], steps=steps).T_ct_source
            return Outcome(T, (time.perf_counter() - started) * 1000)

        # One untimed call each, so that one-off set-up (kernels, buffers) is not a frame's latency.
        intensity(0, steps=1)
        self.rayemb.estimate(test.images[0], test.K[0])
        if test.landmarks_ct is not None:
            self.fixed.estimate(test.images[0], test.K[0], test.landmarks_ct)

        def estimated(est, **kwargs) -> Method:
            def run(i: int) -> Outcome:
                e = est.estimate(test.images[i], test.K[i], **kwargs)
                return Outcome(e.T_ct_source if e.ok else None, e.latency_ms, e.reason)

            return run

        def tracked() -> Method:  # frames in order (evaluate's loop), stamped at the set's rate
            tracker = Tracker(self.rayemb_refined)

            def run(i: int) -> Outcome:
                e = tracker.estimate(test.images[i], test.K[i], round(i * 1e9 / test.fps))
                return Outcome(e.T_ct_source if e.ok else None, e.latency_ms, e.reason, e.mode)

            return run

        methods: dict[str, Method | str] = {
            "intensity": intensity,
            "fixed_landmark": "the fixed-landmark network knows only the bundled CT's 14 landmarks",
            "rayemb": estimated(self.rayemb),
            "rayemb_refined": estimated(self.rayemb_refined),
            "rayemb_tracked": tracked() if test.fps else "the set's frames are independent views, not a sequence",
        }
        if test.landmarks_ct is not None:
            methods["fixed_landmark"] = estimated(self.fixed, points_ct=test.landmarks_ct)
        return methods


def evaluate(methods: Methods, test: TestSet, config: BenchmarkConfig, set_seed: int) -> dict:
    """All methods on every frame of one set; the set's entry of benchmark.json."""
    from tqdm import tqdm

    rng = np.random.default_rng([set_seed, 7])  # the initial poses: a stream of their own
    initial = np.stack([config.initial.perturb(T, test.volume.center, rng) for T in test.T_gt])
    calls = methods.for_set(test, initial)
    points = target_points(test.volume)
    outcomes: dict[str, list[Outcome]] = {name: [] for name, call in calls.items() if not isinstance(call, str)}
    for i in tqdm(range(len(test.images)), desc=test.name, unit="frame", disable=not config.progress):
        for name in outcomes:
            outcomes[name].append(calls[name](i))

    def summary(name: str) -> dict:
        if isinstance(calls[name], str):
            return {"available": False, "reason": calls[name]}
        runs = outcomes[name]
        mtre = [frame_mtre(o.T, T, points) for o, T in zip(runs, test.T_gt)]
        return {
            "available": True,
            **accuracy_summary(mtre),
            "ok_fraction": float(np.mean([o.T is not None for o in runs])),
            "latency_ms": latency_summary([o.latency_ms for o in runs]),
            "per_frame_mtre_mm": mtre,
            "per_frame_latency_ms": [o.latency_ms for o in runs],
            "per_frame_refusal": [o.reason for o in runs],
            **({"frames_from_prior": sum(o.mode == "prior" for o in runs)} if name == "rayemb_tracked" else {}),
        }

    return {
        "description": test.description,
        "frames": len(test.images),
        "image_hw": list(test.images[0].shape),
        "initial_mtre_mm": accuracy_summary([frame_mtre(T0, T, points) for T0, T in zip(initial, test.T_gt)])["mtre_mm"],
        "methods": {name: summary(name) for name in METHODS},
    }


def pooled(results: list[dict]) -> dict:
    """Each method over every frame of the given sets' results (where it applies to all)."""
    out = {}
    for name in METHODS:
        runs = [r["methods"][name] for r in results]
        if not all(run["available"] for run in runs):
            out[name] = {"available": False, "reason": next(run["reason"] for run in runs if not run["available"])}
            continue
        mtre = [m for run in runs for m in run["per_frame_mtre_mm"]]
        out[name] = {
            "available": True,
            **accuracy_summary(mtre),
            "ok_fraction": float(np.mean(np.isfinite(mtre))),
            "latency_ms": latency_summary([t for run in runs for t in run["per_frame_latency_ms"]]),
            "frames": len(mtre),
        }
    return out


def run_benchmark(config: BenchmarkConfig, on_set: Callable[[str, dict, str, int], None] | None = None) -> dict:
    """Every set, every method; writes ``config.out/benchmark.json`` and returns its content.
    ``on_set(name, result, device, torch threads)`` is called as each set finishes."""
    import torch

    methods = Methods(config)
    if config.dataset is None:
        sets = simulated_sets(config, methods.fixed.points_ct)
    else:
        sets = deepfluoro_sets(config.dataset[1], config.frames)
    results, unseen = {}, []
    for test in sets:
        results[test.name] = evaluate(methods, test, config, test.seed)
        unseen += [test.name] if test.unseen else []
        if on_set is not None:
            on_set(test.name, results[test.name], methods.device, torch.get_num_threads())
    if not results:
        raise BenchmarkError("no test set to run")
    headline = unseen or list(results)
    report = {
        "device": methods.device,
        "torch_threads": torch.get_num_threads(),
        "frames": next(iter(results.values()))["frames"],  # per set
        # The headline: every frame of the unseen-anatomy sets together (a refusal a failure).
        "methods": pooled([results[name] for name in headline]),
        "headline_sets": headline,
        "method_names": list(METHODS),
        "sets": results,
        "settings": {
            "dataset": "simulated" if config.dataset is None else config.dataset[0],
            "volume": config.volume,
            "width_px": config.width,
            "seed": config.seed,
            "intensity_steps": config.intensity_steps,
            "refine_steps": config.params.refine_steps,
            "initial_error": {**asdict(config.initial), "definition": InitialError.__doc__.split("\n\n")[0]},
            "mtre_targets": TARGET_DEFINITION,
            "fixed_landmark_checkpoint": str(config.fixed_landmark_checkpoint),
            "rayemb_checkpoint": config.params.checkpoint or "shipped default",
        },
    }
    config.out.mkdir(parents=True, exist_ok=True)
    (config.out / "benchmark.json").write_text(json.dumps(json_safe(report), indent=2, allow_nan=False) + "\n")
    return report
