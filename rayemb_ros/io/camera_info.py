"""Which CameraInfo an image takes: the one pairing rule of the node and the bag reader.

An image and its sensor_msgs/CameraInfo arrive separately (two topics, or two records of a
bag). The contract pairs them by stamp, else with the latest CameraInfo; this module adds the
one exception that keeps a wrong K from giving a wrong pose that looks right (see
``camera_info_for_image``). Plain data, no ROS.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

import numpy as np
from jaxtyping import Float

Info = TypeVar("Info")  # a CameraInfo as its holder keeps it (a K, or a record with one)

# How many CameraInfos an image may look back over for its K: the node remembers this many,
# and a bag reader looks back as far.
CAMERA_INFO_HISTORY = 64
# How every refusal for want of a CameraInfo begins (node, bag reader), so that a client
# (the via-node replay resends such a frame) can tell it from the rest by this constant.
NO_CAMERA_INFO = "no CameraInfo"


def steady_intrinsics(Ks: Iterable[Float[np.ndarray, "3 3"]]) -> bool:
    """Whether these intrinsics (a camera's recent CameraInfos) show one K: two or more, all
    equal. Only then may an image whose own CameraInfo is missing borrow another image's, once
    CameraInfos have come one per image: where K changes (zoom, magnification mode; every
    simulated frame), another image's K gives a wrong pose that looks right, and a single
    CameraInfo cannot tell. The node and the bag reader both ask this."""
    Ks = [np.asarray(K) for K in Ks]
    return len(Ks) >= 2 and all(np.array_equal(K, Ks[0]) for K in Ks)


def camera_info_for_image(
    own: Info | None, recent: Sequence[Info], paired: bool, stamp_ns: int,
    K_of: Callable[[Info], Float[np.ndarray, "3 3"]] = lambda info: info,
) -> tuple[Info | str | None, bool]:
    """Which CameraInfo an image takes: its ``own`` (same stamp), else the newest of ``recent``
    (the contract's "or the latest one"), except where CameraInfos have been coming one per
    image (``paired``) and K has not been steady: then the newest is another image's, and the
    answer is why the image gets none. Also returns whether the stream now counts as paired
    (a refusal keeps it so: the next image waits for its own again). None: no CameraInfo at
    all. The node and the bag reader both pair by this."""
    if own is not None:
        return own, True
    if not recent:
        return None, paired
    if paired and not steady_intrinsics(K_of(info) for info in recent):
        return (f"{NO_CAMERA_INFO} with this image's stamp ({stamp_ns}) came, and the camera's K has been changing: "
                "another image's K would give a wrong pose"), True
    return recent[-1], False
