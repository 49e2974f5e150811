"""From a frame to a pose: the RayEmb estimator (scene preparation, landmarks, PnP, refinement),
the trust gates and pose grade, typed results, the fixed-landmark baseline's estimator, and the
live loop behind the node (``runner``).
"""
