"""The contact sheet: a readable PNG grid with the points drawn in red."""

import cv2
import numpy as np

from rayemb_ros.imaging.contact_sheet import save_contact_sheet


def test_contact_sheet_png(tmp_path):
    rng = np.random.default_rng(0)
    images = [rng.random((40, 60)).astype(np.float32) for _ in range(5)]
    points = [np.array([[10.0, 20.0], [55.0, 5.0], [500.0, 500.0]])] * 4 + [None]
    path = save_contact_sheet(tmp_path / "sub" / "sheet.png", images, points, titles=list("abcde"), columns=3)
    png = cv2.imread(str(path))
    assert png is not None and png.shape[1] == 3 * 300 and png.shape[0] == 2 * 300
    b, g, r = (png[..., i].astype(int) for i in range(3))
    assert ((r > 200) & (g < 100) & (b < 100)).sum() > 20  # the red markers are there
