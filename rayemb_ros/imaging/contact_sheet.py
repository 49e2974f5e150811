"""A PNG grid of frames with 2D points drawn on them (e.g. projected landmarks), for eyes.

Drawn with matplotlib's object API on the Agg canvas (no pyplot state, no display).
Pixel centres sit at integer coordinates, as in ``camera``: a point (u, v) = (column, row)
is drawn on the centre of pixel [v, u].
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from jaxtyping import Float
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def save_contact_sheet(
    path: str | Path,
    images: Sequence[Float[np.ndarray, "H W"]],
    points: Sequence[Float[np.ndarray, "N 2"] | None] | None = None,
    titles: Sequence[str] | None = None,
    columns: int = 4,
    panel_inches: float = 3.0,
) -> Path:
    """Save ``images`` as a grid PNG with ``points[i]`` (u, v pixels) drawn on image i.

    Each image is shown grey on its own min..max range; points outside an image are left out.
    """
    if not images:
        raise ValueError("a contact sheet needs at least one image")
    columns = max(1, min(columns, len(images)))
    rows = math.ceil(len(images) / columns)
    fig = Figure(figsize=(columns * panel_inches, rows * panel_inches), dpi=100)
    FigureCanvasAgg(fig)
    for i, image in enumerate(images):
        ax = fig.add_subplot(rows, columns, i + 1)
        h, w = image.shape
        ax.imshow(image, cmap="gray", interpolation="nearest")
        uv = None if points is None else points[i]
        if uv is not None and len(uv):
            ax.scatter(uv[:, 0], uv[:, 1], s=9, c="#ff3030", marker="+", linewidths=0.8)
        # imshow spans -0.5 .. size - 0.5; keep that view when points fall outside.
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)
        if titles is not None:
            ax.set_title(titles[i], fontsize=8)
        ax.set_axis_off()
    fig.tight_layout(pad=0.3)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
