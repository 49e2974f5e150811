"""The training settings, ``TrainConfig``: the one source of the training defaults (the
node's and the estimator's are :mod:`rayemb_ros.params`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from rayemb_ros.learning.model import EncoderConfig


@dataclass
class TrainConfig:
    # The training CTs (files, DICOM folders, 'example'); every batch draws one of them.
    volumes: tuple[str, ...] = ("example",)
    # CTs held out of training, validated on one by one (none: the training CTs, other poses).
    val_volumes: tuple[str, ...] = ()
    # Every batch a new patient made from its CT (imaging.anatomy; never mirrored).
    anatomy: bool = False
    # Train on the slices above this height (mm, the CTs' world z) only: the region below is
    # held out, for testing on anatomy the encoder never saw. None: the whole CT.
    holdout_below_mm: float | None = None
    # Share of the queries made as an operating room makes them (imaging.operating_room's
    # training_look: instruments, low dose, vendor display); templates stay clean. 0: none.
    operating_room: float = 0.0
    # Prepared CTs (volume, landmark pool, renderer) kept at once; more CTs are loaded again.
    max_cached_volumes: int = 4
    steps: int = 20000
    batch: int = 8
    templates: int = 6  # per query, as the subspace dimension at training time
    points: int = 48  # 3D points per query
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup: int = 300
    tau: float = 0.05  # InfoNCE temperature on the [0, 1] similarity
    seed: int = 0
    landmark_pool: int = 4000
    val_frames: int = 24
    val_every: int = 500
    ckpt_every: int = 250
    device: str = "auto"
    init: str = ""  # start from these weights (fine-tuning); "" = from scratch
    encoder: EncoderConfig = field(default_factory=EncoderConfig)


def config_json(config: TrainConfig) -> dict:
    """The settings as plain JSON (saved beside the weights)."""
    d = asdict(config)
    d["encoder"] = config.encoder.as_dict()
    return d
