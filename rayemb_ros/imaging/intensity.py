"""Image intensity conventions: what the estimator sees is always attenuation.

``attenuation``: brighter = more attenuation (a DRR, a displayed fluoroscopy frame).
``transmission``: the raw detector signal, brighter = more photons; Beer-Lambert turns it into
attenuation with -log(I / I0). No absolute scale is assumed, so I0 is the frame's brightest
pixel (the unattenuated background, or close to it).
"""

from __future__ import annotations

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
