"""The frame with its estimated landmarks drawn: what ~/overlay shows an operator."""

from __future__ import annotations

import cv2
import numpy as np
from jaxtyping import Float, UInt8

from rayemb_ros.io.images import to_encoding_range
from rayemb_ros.estimation.result import Landmarks

# RGB colours: PnP inliers green, outliers red (the same as the RViz markers).
INLIER_RGB = (0, 255, 0)
OUTLIER_RGB = (255, 0, 0)
# cv2 draws at integer pixels; 4 fractional bits keep the sub-pixel landmark positions.
_SHIFT = 4


def draw_landmarks(image: Float[np.ndarray, "H W"], landmarks: Landmarks) -> UInt8[np.ndarray, "H W 3"]:
    """An RGB image of a grey frame (any range) with a circle at each landmark pixel."""
    rgb = cv2.cvtColor(to_encoding_range(image, "mono8"), cv2.COLOR_GRAY2RGB)
    radius = max(2, round(max(image.shape) / 128))
    for (u, v), inlier in zip(landmarks.uv, landmarks.inliers):
        centre = (round(u * (1 << _SHIFT)), round(v * (1 << _SHIFT)))
        colour = INLIER_RGB if inlier else OUTLIER_RGB
        cv2.circle(rgb, centre, radius << _SHIFT, colour, thickness=1, lineType=cv2.LINE_AA, shift=_SHIFT)
    return rgb
