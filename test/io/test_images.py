"""sensor_msgs/Image <-> numpy: every accepted encoding round-trips, everything else is refused."""

import numpy as np
import pytest
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from rayemb_ros.io.images import ENCODINGS, ImageError
from unsupported_encodings import UNSUPPORTED
from rayemb_ros.imaging.intensity import to_attenuation
from rayemb_ros.ros.convert import array_to_image, image_to_array



def ramp(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    values = np.arange(np.prod(shape)).reshape(shape) % 200 + 1
    return values.astype(dtype)


def message(encoding: str, **fields) -> Image:
    """A valid 5 x 7 image message, then relabelled ``encoding`` and with ``fields`` overwritten."""
    dtype, channels = ENCODINGS.get(encoding, (np.dtype(np.uint8), 1))
    shape = (5, 7, channels) if channels > 1 else (5, 7)
    msg = array_to_image(ramp(shape, dtype), encoding if encoding in ENCODINGS else "mono8", Header())
    msg.encoding = encoding
    for name, value in fields.items():
        setattr(msg, name, value)
    return msg


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_round_trip(encoding):
    dtype, channels = ENCODINGS[encoding]
    if channels == 1:
        image = ramp((5, 7), dtype)
        np.testing.assert_array_equal(image_to_array(array_to_image(image, encoding, Header())), image)
    else:
        grey = ramp((5, 7), np.uint8)
        colour = np.repeat(grey[..., None], 3, axis=2)
        colour[0, 0] = (255, 0, 0) if encoding == "rgb8" else (0, 0, 255)  # pure red either way
        decoded = image_to_array(array_to_image(colour, encoding, Header()))
        assert decoded[0, 0] == pytest.approx(0.299 * 255)
        np.testing.assert_allclose(decoded[1:], grey[1:], atol=1e-3)


@pytest.mark.parametrize("encoding", ["mono16", "32FC1", "64FC1"])
def test_big_endian_and_padded_rows(encoding):
    dtype, _ = ENCODINGS[encoding]
    image = ramp((4, 6), dtype)
    big = image.astype(dtype.newbyteorder(">"))
    row = big.tobytes()
    step = 6 * dtype.itemsize + 3  # three bytes of padding per row
    data = b"".join(row[r * 6 * dtype.itemsize:(r + 1) * 6 * dtype.itemsize] + b"\0\0\0" for r in range(4))
    msg = Image(height=4, width=6, encoding=encoding, is_bigendian=1, step=step, data=data)
    np.testing.assert_array_equal(image_to_array(msg), image)


@pytest.mark.parametrize("encoding", UNSUPPORTED)
def test_unsupported_encodings_are_refused(encoding):
    with pytest.raises(ImageError, match="unsupported encoding"):
        image_to_array(message(encoding))


@pytest.mark.parametrize(
    "fields, reason",
    [
        ({"step": 6}, "step 6 is smaller"),              # mono8 rows of 7 bytes
        ({"step": 8}, "expected step\\*height"),          # claims padding the data lacks
        ({"height": 6}, "expected step\\*height"),
        ({"height": 0, "width": 0, "step": 0, "data": b""}, "empty image"),
        ({"width": 0}, "empty image"),
    ],
)
def test_size_mismatches_are_refused(fields, reason):
    with pytest.raises(ImageError, match=reason):
        image_to_array(message("mono8", **fields))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_pixels_are_refused(bad):
    image = ramp((5, 7), np.float32)
    image[2, 3] = bad
    with pytest.raises(ImageError, match="NaN or Inf"):
        image_to_array(array_to_image(image, "32FC1", Header()))


@pytest.mark.parametrize("encoding", ["mono8", "16UC1", "32FC1", "bgr8"])
def test_constant_images_are_refused(encoding):
    dtype, channels = ENCODINGS[encoding]
    image = np.full((5, 7, channels) if channels > 1 else (5, 7), 9, dtype)
    with pytest.raises(ImageError, match="constant image"):
        image_to_array(array_to_image(image, encoding, Header()))


def test_intensity_conversion():
    transmission = np.array([[1000.0, 500.0], [10.0, 0.0]], np.float32)
    attenuation = to_attenuation(transmission, "transmission")
    np.testing.assert_allclose(attenuation[0], [0.0, np.log(2.0)], rtol=1e-6)
    assert np.isfinite(attenuation).all() and attenuation[1, 1] > attenuation[1, 0] > attenuation[0, 1]
    np.testing.assert_allclose(to_attenuation(transmission * 7, "transmission"), attenuation, rtol=1e-5)  # no fixed scale
    assert to_attenuation(transmission, "attenuation") is transmission
    with pytest.raises(ImageError, match="no positive pixel"):
        to_attenuation(np.array([[0.0, -1.0]], np.float32), "transmission")
    with pytest.raises(ValueError, match="image intensity"):
        to_attenuation(transmission, "log")
