"""The fluoroscopy simulator: photon statistics, intensity modes, collimation, determinism, encodings."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from rayemb_ros.imaging import fluoro
from rayemb_ros.io.images import ENCODINGS, decode_image, encode_image, to_encoding_range

H, W = 96, 128


@pytest.fixture(scope="module")
def drr() -> np.ndarray:
    """A smooth blob with a 'bone' bar: a stand-in line-integral image (arbitrary units)."""
    rows, cols = np.mgrid[:H, :W].astype(np.float32)
    blob = 40.0 * np.exp(-((cols - W / 2) ** 2 + (rows - H / 2) ** 2) / (2 * 30.0**2))
    bar = 25.0 * (np.abs(cols - W / 2) < 6)
    return (blob + bar).astype(np.float32)


# Everything on at once, the shutters off (so every pixel is exposed).
FULL = fluoro.FluoroStyle(
    dose=2000.0, optical_depth=4.0, heel=0.1, read_noise=2.0, blur_sigma=0.8, saturation=0.9,
    window_low=0.1, window_high=1.1, gamma=0.7, gain=3.0,
)


def noise_std(drr, dose: float) -> float:
    style = replace(FULL, dose=dose, read_noise=0.0, blur_sigma=0.0)
    clean = fluoro.apply(drr, replace(style, dose=1e12), np.random.default_rng(0))
    return float(np.std(fluoro.apply(drr, style, np.random.default_rng(1)) - clean))


def test_noise_increases_at_lower_dose(drr):
    stds = [noise_std(drr, dose) for dose in (1e5, 1e4, 1e3)]
    assert stds[0] < stds[1] < stds[2]
    # Poisson: the noise of -log(counts) scales like 1/sqrt(dose).
    assert stds[2] / stds[0] == pytest.approx(10.0, rel=0.25)


def test_transmission_is_photon_counts(drr):
    style = fluoro.FluoroStyle(dose=5000.0, gain=2.0)
    out = fluoro.apply(drr, style, np.random.default_rng(0), intensity="transmission")
    expected = 2.0 * 5000.0 * np.exp(-drr * 4.0 / drr.max())
    assert np.mean(out) == pytest.approx(np.mean(expected), rel=0.01)
    assert out[drr == drr.max()].mean() == pytest.approx(2.0 * 5000.0 * np.exp(-4.0), rel=0.2)


def test_intensity_modes_are_monotone_inverses(drr):
    att = fluoro.apply(drr, FULL, np.random.default_rng(7), intensity="attenuation")
    trans = fluoro.apply(drr, FULL, np.random.default_rng(7), intensity="transmission")
    order = np.argsort(trans, axis=None, kind="stable")
    assert np.all(np.diff(att.ravel()[order]) <= 1e-6)  # brighter transmission = darker attenuation
    assert np.corrcoef(att.ravel(), -np.log(trans.ravel()))[0, 1] > 0.95
    # Brighter = more attenuation: the bone bar is brighter than the background.
    assert att[:, W // 2].mean() > att[:, 5].mean()


def test_collimation_zeroes_outside(drr):
    style = replace(FULL, iris_radius=0.9, iris_dx=0.1, iris_dy=-0.05, cut_left=0.15, cut_top=0.1)
    out = fluoro.apply(drr, style, np.random.default_rng(0), intensity="transmission")
    rows, cols = np.mgrid[:H, :W]
    cu, cv = (W - 1) / 2 + 0.1 * W / 2, (H - 1) / 2 - 0.05 * H / 2
    in_iris = (cols - cu) ** 2 + (rows - cv) ** 2 <= (0.9 * H / 2) ** 2
    inside = in_iris & (cols >= 0.15 * W) & (rows >= 0.1 * H)
    assert np.all(out[~inside] == 0)
    assert np.all(out[inside] > 0)
    assert 0.3 < inside.mean() < 0.8


def test_deterministic_with_a_seed(drr):
    def frame(seed):
        rng = np.random.default_rng(seed)
        return fluoro.apply(drr, fluoro.sample_style(rng), rng)

    np.testing.assert_array_equal(frame(3), frame(3))
    assert not np.array_equal(frame(3), frame(4))


def test_sampled_styles_stay_in_range_and_usable(drr):
    rng = np.random.default_rng(0)
    for _ in range(50):
        style = fluoro.sample_style(rng)
        assert 300 <= style.dose <= 30000 and 0.6 <= style.gamma <= 1.6
        out = fluoro.apply(drr, style, rng)
        assert out.dtype == np.float32 and out.shape == (H, W)
        assert np.isfinite(out).all() and out.min() >= 0 and out.max() > 0


@pytest.mark.parametrize("encoding", list(ENCODINGS))
@pytest.mark.parametrize("intensity", ["attenuation", "transmission"])
def test_every_encoding_scales_correctly(drr, encoding, intensity):
    image = fluoro.apply(drr, FULL, np.random.default_rng(0), intensity=intensity)
    pixels = to_encoding_range(image, encoding)
    dtype, _ = ENCODINGS[encoding]
    assert pixels.dtype == dtype
    if dtype.kind == "u":  # the full range of the integer type is used
        assert pixels.min() == 0 and pixels.max() == np.iinfo(dtype).max
    data, step = encode_image(pixels, encoding)
    back = decode_image(encoding, H, W, step, False, data)
    # The received grey image is the frame up to an affine scale (and quantisation).
    span = float(image.max() - image.min())
    expected = (image - image.min()) / span * float(back.max() - back.min()) + float(back.min())
    quantum = 1.0 if dtype.kind == "u" else 1e-6 * float(np.abs(back).max())
    assert np.abs(back - expected).max() <= quantum


def test_torch_batch_matches_numpy(drr):
    styles = [replace(FULL, dose=1e10, read_noise=0.0), replace(FULL, dose=1e10, read_noise=0.0, iris_radius=1.0, blur_sigma=1.4)]
    batch = torch.from_numpy(np.stack([drr, 0.5 * drr]))[:, None]
    out = fluoro.apply_batch(batch, styles, torch.Generator().manual_seed(0))
    assert out.shape == (2, 1, H, W)
    for i, (L, style) in enumerate(zip([drr, 0.5 * drr], styles)):
        np.testing.assert_allclose(out[i, 0].numpy(), fluoro.apply(L, style, np.random.default_rng(0)), atol=2e-3)


def test_torch_batch_is_seeded():
    batch = torch.rand(3, 1, 32, 32) * 10
    styles = [fluoro.sample_style(np.random.default_rng(i)) for i in range(3)]
    a = fluoro.apply_batch(batch, styles, torch.Generator().manual_seed(5), intensity="transmission")
    b = fluoro.apply_batch(batch, styles, torch.Generator().manual_seed(5), intensity="transmission")
    torch.testing.assert_close(a, b)


def test_rejects_unknown_intensity(drr):
    with pytest.raises(ValueError, match="intensity"):
        fluoro.apply(drr, FULL, np.random.default_rng(0), intensity="log")
