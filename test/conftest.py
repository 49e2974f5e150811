"""Shared fixtures: the real bundled CT, thread limits for a 2-core machine."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def example_volume():
    from rayemb_ros.geometry.volume import load_volume

    return load_volume("example")


@pytest.fixture(scope="session")
def coarse_ct(example_volume, tmp_path_factory):
    """A NIfTI copy of the bundled CT, 4 x 4 x 2 times coarser, in the same world frame (named
    landmarks stay valid): CPU rendering of it takes a fraction of a second per batch."""
    import nibabel
    import numpy as np

    path = tmp_path_factory.mktemp("coarse") / "coarse.nii.gz"
    affine = example_volume.affine @ np.diag([4.0, 4.0, 2.0, 1.0])
    nibabel.save(nibabel.Nifti1Image(example_volume.hu[::4, ::4, ::2], affine), path)
    return path


@pytest.fixture(scope="session")
def beads(example_volume):
    """The bundled CT with dense beads added, and the beads' centres (mm, ``ct``)."""
    from beads import with_beads

    return with_beads(example_volume)
