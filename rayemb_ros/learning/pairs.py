"""Training pairs: per sample a query DRR at a random clinical pose and detector, degraded into
a realistic fluoroscopy frame (:mod:`rayemb_ros.imaging.fluoro`; with ``operating_room``, some
as an operating room makes them: :mod:`rayemb_ros.imaging.operating_room`), and T clean template DRRs of
the same CT at other poses, with the projections of 3D bone points that all of them see.
Rendered on the fly with nanodrr (fast on CUDA; on the CPU it is the bottleneck).
"""

from __future__ import annotations

import queue
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float

from rayemb_ros.geometry.camera import Detector, project
from rayemb_ros.geometry.poses import reference_detector, sample_detector, sample_poses
from rayemb_ros.geometry.volume import Volume, load_volume, sample_landmarks
from rayemb_ros.imaging.anatomy import make_variant
from rayemb_ros.imaging.fluoro import apply_batch, sample_style
from rayemb_ros.imaging.operating_room import Look, bone_anchors, training_look
from rayemb_ros.imaging.render import NanoRenderer
from rayemb_ros.learning.config import TrainConfig


@dataclass
class Batch:
    queries: torch.Tensor  # B 1 S S, degraded fluoroscopy
    templates: torch.Tensor  # (B T) 1 S S, clean DRRs
    uv_query: torch.Tensor  # B P 2
    uv_templates: torch.Tensor  # (B T) P 2
    valid: torch.Tensor  # B P


class PairSampler:
    """Renders training batches of one CT on one device. ``volume`` (default: the config's
    first CT) and its landmark ``pool`` (mm, ``ct``; default: sampled in its bone)."""

    def __init__(self, config: TrainConfig, device: torch.device, volume: Volume | None = None,
                 pool: Float[np.ndarray, "N 3"] | None = None):
        self.config = config
        self.device = device
        self.volume = volume if volume is not None else load_volume(config.volumes[0])
        self.renderer = NanoRenderer(self.volume, device)
        self.pool = pool if pool is not None else sample_landmarks(self.volume, config.landmark_pool, seed=config.seed)
        size = config.encoder.image_size
        self.template_detector = reference_detector(size, size)
        self.anchors = bone_anchors(self.volume) if config.operating_room > 0 else None

    def sample(self, rng: np.random.Generator) -> Batch:
        c = self.config
        b, t, p, s = c.batch, c.templates, c.points, c.encoder.image_size
        center = self.volume.center
        q_poses = sample_poses(rng, b, center)
        q_dets = [sample_detector(rng, s, s) for _ in range(b)]
        t_poses = sample_poses(rng, b * t, center)
        points = self.pool[rng.choice(len(self.pool), size=(b, p))]  # B P 3

        uv_q = np.stack([project(d.K, T, X) for d, T, X in zip(q_dets, q_poses, points)])
        uv_t = project(self.template_detector.K, t_poses, np.repeat(points, t, axis=0))
        margin = 2.0
        inside = lambda uv: ((uv >= margin) & (uv <= s - 1 - margin)).all(-1)  # noqa: E731
        # Points the query's collimator hides stay positives: the encoder places them from the
        # anatomy around them, and dropping them made PnP worse (docs/training.md).
        valid = inside(uv_q) & inside(uv_t).reshape(b, t, p).all(1)

        queries = self.render_queries(rng, q_poses, q_dets)
        with torch.no_grad():  # clean templates, with the contrast the queries were drawn with
            templates = self.renderer.render(torch.as_tensor(t_poses), self.template_detector)[:, None]
        as_t = lambda a: torch.as_tensor(a, dtype=torch.float32, device=self.device)  # noqa: E731
        return Batch(queries, templates, as_t(uv_q), as_t(uv_t), torch.as_tensor(valid, device=self.device))

    def render_queries(
        self, rng: np.random.Generator, poses: Float[np.ndarray, "B 4 4"], detectors: list[Detector]
    ) -> Float[torch.Tensor, "B 1 S S"]:
        """Realistic fluoroscopy frames at the poses: DRRs degraded by a random acquisition style,
        and the share ``config.operating_room`` of them as an operating room makes them."""
        # Vary the HU -> attenuation mapping so that bone/soft-tissue contrast is not learned
        # as a constant (other renderers and real detectors differ).
        self.renderer.subject.set_mu(mu_bone=float(rng.uniform(0.035, 0.09)))
        with torch.no_grad():
            clean = self.renderer.render(torch.as_tensor(poses), detectors)[:, None]
            gen = torch.Generator(device=self.device).manual_seed(int(rng.integers(2**62)))
            styles = [sample_style(rng) for _ in detectors]
            if self.anchors is None:  # no draws more: batches as before operating_room existed
                return apply_batch(clean, styles, gen)
            share = self.config.operating_room
            looks = [training_look(rng, self.anchors) if rng.random() < share else Look() for _ in detectors]
            metal = np.zeros(clean.shape, dtype=np.float32)
            for i, (look, T, detector) in enumerate(zip(looks, poses, detectors)):
                depth = look.metal(T, detector)
                if depth is not None:
                    metal[i, 0] = depth
            frames = apply_batch(clean, [look.styled(s) for look, s in zip(looks, styles)], gen,
                                 extra_depth=torch.as_tensor(metal, device=clean.device))
            for i, look in enumerate(looks):
                if look.display is not None:
                    shown = look.shown(frames[i, 0].cpu().numpy())
                    frames[i, 0] = torch.as_tensor(shown, device=frames.device)
            return frames


def batch_rng(seed: int, step: int, rank: int = 0) -> np.random.Generator:
    """The randomness of one training batch: from (seed, step) alone, so that a resumed run
    draws what an uninterrupted one would, and from the rank too, so that data-parallel ranks
    draw different batches (rank 0 draws what a single process draws)."""
    return np.random.default_rng([seed, step] if rank == 0 else [seed, step, rank])


class PatientPool:
    """The training CTs: every batch draws one (seeded by seed, step and rank) and, with
    ``config.anatomy``, makes a new patient from it (:mod:`rayemb_ros.imaging.anatomy`; never
    mirrored). Each CT keeps its volume, landmark pool and renderer, for at most
    ``config.max_cached_volumes`` CTs at once (least recently used first out)."""

    def __init__(self, config: TrainConfig, device: torch.device, volumes: tuple[str, ...] | None = None):
        self.config = config
        self.device = device
        self.volumes = tuple(volumes if volumes is not None else config.volumes)
        if not self.volumes:
            raise ValueError("no training CT")
        self._samplers: OrderedDict[str, PairSampler] = OrderedDict()

    @property
    def cached(self) -> int:
        """How many CTs are prepared now."""
        return len(self._samplers)

    def sampler(self, spec: str) -> PairSampler:
        """The prepared CT ``spec`` (loaded and sampled again when it fell out of the cache)."""
        if spec in self._samplers:
            self._samplers.move_to_end(spec)
            return self._samplers[spec]
        volume = load_volume(spec)
        if self.config.holdout_below_mm is not None:
            volume = volume.above(self.config.holdout_below_mm)
        sampler = PairSampler(self.config, self.device, volume)
        self._samplers[spec] = sampler
        while len(self._samplers) > max(1, self.config.max_cached_volumes):
            self._samplers.popitem(last=False)
        return sampler

    def batch(self, rng: np.random.Generator) -> Batch:
        """One batch: a CT (drawn only when there are several, so that one CT's batches are
        those of a single-CT run), a new patient from it with anatomy on, and its pairs."""
        spec = self.volumes[int(rng.integers(len(self.volumes)))] if len(self.volumes) > 1 else self.volumes[0]
        sampler = self.sampler(spec)
        if self.config.anatomy:
            variant = make_variant(sampler.volume, int(rng.integers(2**31)))
            sampler = PairSampler(self.config, self.device, variant.volume, variant.carry(sampler.pool))
        return sampler.sample(rng)


class Prefetch:
    """Batches made ahead on a background thread, in step order: on a GPU the rendering of the
    next batches overlaps the training step. ``make(step)`` must depend on the step alone (as
    ``batch_rng`` makes it), so prefetched batches are those made on demand, and its renderers
    belong to the prefetching thread from then on (a renderer's contrast is per call state)."""

    def __init__(self, make: Callable[[int], Batch], steps: int, depth: int = 2):
        self._make, self._steps, self._depth = make, steps, depth
        self._queue: queue.Queue | None = None

    def __call__(self, step: int) -> Batch:
        if self._queue is None:  # first call: start at the (resumed) step
            self._queue = queue.Queue(maxsize=self._depth)
            threading.Thread(target=self._fill, args=(step,), name="rayemb-prefetch", daemon=True).start()
        made, batch = self._queue.get()
        if isinstance(batch, BaseException):
            raise batch
        assert made == step, f"prefetched step {made}, asked for {step}"
        return batch

    def _fill(self, first: int) -> None:
        for step in range(first, self._steps):
            try:
                self._queue.put((step, self._make(step)))
            except BaseException as exc:  # reported to the training loop on its next batch
                self._queue.put((step, exc))
                return
