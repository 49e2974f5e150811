"""Carrying a pose on by its last motion (tracking's prediction): exact for a C-arm turning
steadily about a pivot, or sliding at constant speed; the identity at ratio 0."""

import numpy as np
import pytest

from rayemb_ros.geometry.poses import carm_pose, extrapolate_pose

PIVOT = np.array([10.0, -20.0, 30.0])


@pytest.mark.parametrize("ratio", [0.0, 0.5, 1.0, 2.0])
def test_a_steady_turn_about_the_pivot_is_carried_on_exactly(ratio):
    before, last = carm_pose(PIVOT, 3.0, 10.0, 2.0, 800.0), carm_pose(PIVOT, 4.5, 10.0, 2.0, 800.0)
    expected = carm_pose(PIVOT, 4.5 + 1.5 * ratio, 10.0, 2.0, 800.0)
    np.testing.assert_allclose(extrapolate_pose(before, last, ratio, PIVOT), expected, atol=1e-9)


def test_a_slide_at_constant_speed_is_carried_on_whatever_the_pivot():
    before = carm_pose(PIVOT, 3.0, 10.0, 2.0, 800.0)
    last, next_ = before.copy(), before.copy()
    last[:3, 3] += [2.0, 0.0, -1.0]
    next_[:3, 3] += [4.0, 0.0, -2.0]
    np.testing.assert_allclose(extrapolate_pose(before, last, 1.0, PIVOT + 50.0), next_, atol=1e-9)
