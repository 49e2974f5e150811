"""Shared fixtures: the real bundled CT, thread limits for a 2-core machine."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def example_volume():
    from rayemb_ros.volume import load_volume

    return load_volume("example")
