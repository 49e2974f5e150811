"""sensor_msgs/Image wire format <-> numpy, without cv_bridge and without ROS.

Used by the ROS layer (live messages) and by the bag reader/writer (raw CDR via rosbags),
so both accept exactly the contract's encodings and reject everything else the same way.
"""

from __future__ import annotations

import numpy as np
from jaxtyping import Float

from rayemb_ros.errors import InputError

# encoding -> (numpy dtype, channels)
ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "mono8": (np.dtype(np.uint8), 1),
    "mono16": (np.dtype(np.uint16), 1),
    "16UC1": (np.dtype(np.uint16), 1),
    "32FC1": (np.dtype(np.float32), 1),
    "64FC1": (np.dtype(np.float64), 1),
    "rgb8": (np.dtype(np.uint8), 3),
    "bgr8": (np.dtype(np.uint8), 3),
}


class ImageError(InputError, ValueError):
    """A frame that cannot be used; the message is the one log line users see."""


def decode_image(
    encoding: str, height: int, width: int, step: int, is_bigendian: bool, data: bytes | bytearray | memoryview
) -> Float[np.ndarray, "H W"]:
    """The grey image (float32, H x W) of a sensor_msgs/Image's fields.

    Colour is converted to grey (luma). Raises ImageError for an unsupported encoding, a
    size that does not match ``step`` or the data length, a 0-size image, non-finite
    values, or a constant image.
    """
    if encoding not in ENCODINGS:
        raise ImageError(f"unsupported encoding {encoding!r} (accepted: {', '.join(ENCODINGS)})")
    if height <= 0 or width <= 0:
        raise ImageError(f"empty image ({width}x{height})")
    dtype, channels = ENCODINGS[encoding]
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        raise ImageError(f"step {step} is smaller than width*channels*bytes = {row_bytes} for {encoding}")
    if len(data) != step * height:
        raise ImageError(f"data has {len(data)} bytes, expected step*height = {step}*{height} = {step * height}")
    buf = np.frombuffer(data, dtype=np.uint8).reshape(height, step)[:, :row_bytes]
    pixels = buf.copy().view(dtype.newbyteorder(">" if is_bigendian else "<"))
    pixels = pixels.reshape(height, width, channels).astype(np.float32)
    if channels == 3:
        r, g, b = (pixels[..., 0], pixels[..., 1], pixels[..., 2])
        if encoding == "bgr8":
            r, b = b, r
        grey = 0.299 * r + 0.587 * g + 0.114 * b
    else:
        grey = pixels[..., 0]
    if not np.isfinite(grey).all():
        raise ImageError("image contains NaN or Inf")
    if float(grey.max()) == float(grey.min()):
        raise ImageError(f"constant image (every pixel = {float(grey.min()):g})")
    return np.ascontiguousarray(grey)


def encode_image(image: np.ndarray, encoding: str) -> tuple[bytes, int]:
    """Raw data and step of an image for a sensor_msgs/Image (little-endian).

    ``image`` is H x W (grey) or H x W x 3 (in the channel order ``encoding`` names); its
    values are cast to the encoding's dtype as they are, so scale them first.
    """
    if encoding not in ENCODINGS:
        raise ImageError(f"unsupported encoding {encoding!r}")
    dtype, channels = ENCODINGS[encoding]
    arr = np.asarray(image)
    if channels == 3 and arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if channels == 1 and arr.ndim != 2:
        raise ImageError(f"{encoding} needs an H x W array, got shape {arr.shape}")
    arr = np.ascontiguousarray(arr.astype(dtype.newbyteorder("<")))
    return arr.tobytes(), arr.shape[1] * channels * dtype.itemsize


def to_encoding_range(image: Float[np.ndarray, "H W"], encoding: str) -> np.ndarray:
    """Scale a float image to the full range of an integer encoding (floats pass through)."""
    dtype, _ = ENCODINGS[encoding]
    if dtype.kind == "f":
        return image.astype(dtype)
    lo, hi = float(image.min()), float(image.max())
    top = np.iinfo(dtype).max
    scaled = (image - lo) / max(hi - lo, 1e-12) * top
    return np.clip(np.rint(scaled), 0, top).astype(dtype)
