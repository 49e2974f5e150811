"""A stand-in for torchio on the GPU machine, which has no SimpleITK (too large to carry).

nanodrr.data imports ScalarImage and LabelMap when it is imported, but rayemb builds nanodrr
Subjects from arrays (``Volume.subject``) and reads NIfTI files with nibabel, so neither is
ever called there. Only tools/gpu/device_run.sh puts this folder on the path.
"""


class _Absent:
    def __init__(self, *args, **kwargs):
        raise ImportError("torchio is not installed on this machine (tools/gpu/standin is a stand-in)")


ScalarImage = LabelMap = _Absent
