"""Which torch device to run on: one choice for training and inference alike."""

from __future__ import annotations

import torch

from rayemb_ros.params import ParamError


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ParamError("device cuda requested but torch sees no GPU")
    return torch.device(name)
