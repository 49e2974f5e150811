"""The lent GPU's call (tools/gpu, docs/gpu.md): its scripts parse, and with the torchio
stand-in shadowing torchio, as on the GPU machine, a CT read from NIfTI still renders."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STANDIN = ROOT / "tools" / "gpu" / "standin"


def test_the_scripts_parse():
    for script in ("device_run.sh", "rehearse.sh"):
        subprocess.run(["bash", "-n", str(ROOT / "tools" / "gpu" / script)], check=True)


def test_the_torchio_stand_in_is_enough_to_render_a_nifti_ct(coarse_ct):
    code = (
        "import sys, torchio\n"
        "assert torchio.__file__.startswith(sys.argv[1]), torchio.__file__\n"
        "from rayemb_ros.geometry.poses import reference_detector, template_poses\n"
        "from rayemb_ros.geometry.volume import load_volume\n"
        "from rayemb_ros.imaging.render import NanoRenderer\n"
        "v = load_volume(sys.argv[2])\n"
        "drr = NanoRenderer(v).render_np(template_poses(2, v.center), reference_detector(32, 32))\n"
        "assert drr.shape == (2, 32, 32) and drr.max() > 0, drr.shape\n"
    )
    path = os.pathsep.join(p for p in (str(STANDIN), os.environ.get("PYTHONPATH", "")) if p)
    subprocess.run([sys.executable, "-c", code, str(STANDIN), str(coarse_ct)], check=True,
                   env={**os.environ, "PYTHONPATH": path})
