"""What the estimator sees of a received frame (``estimator_image``): always attenuation, and
undistorted when the camera has a dewarp model.

``attenuation``: brighter = more attenuation (a DRR, a displayed fluoroscopy frame).
``transmission``: the raw detector signal, brighter = more photons; Beer-Lambert turns it into
attenuation with -log(I / I0). No absolute scale is assumed, so I0 is the frame's brightest
pixel (the unattenuated background, or close to it).
"""

from __future__ import annotations

import functools
from pathlib import Path

import cv2
import numpy as np
from jaxtyping import Float

from rayemb_ros.io.images import ImageError
from rayemb_ros.params import IMAGE_INTENSITIES

# Floor of I / I0 before the log: keeps fully dark pixels finite (-log(1e-6) ~ 13.8).
_MIN_TRANSMISSION = 1e-6


def to_attenuation(image: Float[np.ndarray, "H W"], mode: str) -> Float[np.ndarray, "H W"]:
    """The attenuation image (float32) of a frame given in ``mode`` intensity.

    Raises ImageError for a transmission image without signal, ValueError for an unknown mode.
    """
    if mode == "attenuation":
        return image
    if mode == "transmission":
        peak = float(image.max())
        if peak <= 0.0:
            raise ImageError("transmission image has no positive pixel")
        return (-np.log(np.clip(image / peak, _MIN_TRANSMISSION, None))).astype(np.float32)
    raise ValueError(f"image intensity must be one of {IMAGE_INTENSITIES}, got {mode!r}")


@functools.lru_cache(maxsize=4)
def _dewarp_maps(path: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(Path(path).expanduser()) as model:
            return np.asarray(model["map_u"], np.float32), np.asarray(model["map_v"], np.float32)
    except Exception as exc:  # a missing file or keys, not an npz
        raise ImageError(f"cannot read the dewarp model {path} ({type(exc).__name__})") from exc


def dewarp(image: Float[np.ndarray, "H W"], model: str) -> Float[np.ndarray, "H W"]:
    """The frame as an ideal pinhole camera would show it: ``model`` is a grid file (``map_u``,
    ``map_v``: where each ideal pixel shows in the distorted frame; ``rayemb simulate
    --distortion`` writes one beside its bag). ImageError when the frame's size differs."""
    map_u, map_v = _dewarp_maps(model)
    if map_u.shape != image.shape:
        raise ImageError(f"image is {image.shape[1]}x{image.shape[0]} but the dewarp model {model} is "
                         f"{map_u.shape[1]}x{map_u.shape[0]}")
    return cv2.remap(np.asarray(image, np.float32), map_u, map_v, cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)


def estimator_image(image: Float[np.ndarray, "H W"], intensity: str, dewarp_model: str = "") -> Float[np.ndarray, "H W"]:
    """What the estimator gets of a received frame: attenuation, dewarped when there is a model.
    The node and ``rayemb replay`` both prepare frames here."""
    attenuation = to_attenuation(image, intensity)
    return dewarp(attenuation, dewarp_model) if dewarp_model else attenuation
