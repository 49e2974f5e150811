"""The one place that saves and loads encoder weights (always ``weights_only=True``)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from rayemb_ros.errors import InputError
from rayemb_ros.learning.model import Encoder, EncoderConfig

# The weights shipped with the package (rayemb_ros/checkpoints/, each with its training record
# beside it as .json): the encoder, and the fixed-landmark baseline's heatmap network.
CHECKPOINTS = Path(__file__).resolve().parents[1] / "checkpoints"
DEFAULT_CHECKPOINT = CHECKPOINTS / "rayemb_example.pt"
FIXED_LANDMARK_CHECKPOINT = CHECKPOINTS / "fixed_landmark_example.pt"


def weights_digest(model: torch.nn.Module) -> str:
    """Identifies a model's weights by their values (not a file name): 16 hex digits."""
    values = b"".join(v.detach().cpu().numpy().tobytes() for v in model.state_dict().values())
    return hashlib.sha256(values).hexdigest()[:16]


class CheckpointError(InputError, ValueError):
    pass


def save_weights(path: str | Path, encoder: Encoder, info: dict) -> None:
    """Weights + encoder config (+ ``info``: training config and metrics), with the same
    metadata written beside them as ``<path>.json`` for people to read."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"encoder": encoder.config.as_dict(), **info}
    tmp = path.with_suffix(".tmp")
    torch.save({"model": encoder.state_dict(), "meta_json": json.dumps(meta)}, tmp)
    tmp.replace(path)
    path.with_suffix(path.suffix + ".json").write_text(json.dumps(meta, indent=2) + "\n")


def load_encoder(
    path: str | Path | None = None, device: str | torch.device = "cpu", model: type[Encoder] = Encoder
) -> tuple[Encoder, dict]:
    """The encoder in eval mode on ``device`` and its metadata; the shipped default when no path.
    ``model``: an Encoder subclass with another head (built from the same config)."""
    path = Path(path) if path else DEFAULT_CHECKPOINT
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        meta = json.loads(blob["meta_json"])
        encoder = model(EncoderConfig.from_dict(meta["encoder"]))
        encoder.load_state_dict(blob["model"])
    except Exception as exc:
        # Never torch's own text: it advises loading with weights_only=False, which a
        # surgical product must not do with a file it cannot vouch for.
        raise CheckpointError(f"not a rayemb checkpoint, or corrupt: {path} ({type(exc).__name__})") from exc
    return encoder.to(device).eval(), meta
