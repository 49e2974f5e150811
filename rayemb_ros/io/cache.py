"""The disk cache: arrays computed once per input (template banks, prepared scenes, rendered
test sets) and read back on every later call. Keys name the inputs' content, never a file name.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np


def cache_dir() -> Path:
    """Where rendered banks and datasets are kept ($RAYEMB_CACHE or ~/.cache/rayemb_ros)."""
    root = os.environ.get("RAYEMB_CACHE") or Path.home() / ".cache" / "rayemb_ros"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def cached_arrays(kind: str, key: object, compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Arrays computed once per ``key`` (anything JSON or bytes identifying the inputs) and
    kept in the cache as ``<kind>-<hash>.npz``; later calls only read the file."""
    raw = key if isinstance(key, bytes) else json.dumps(key, sort_keys=True).encode()
    path = cache_dir() / f"{kind}-{hashlib.sha256(raw).hexdigest()[:20]}.npz"
    if not path.exists():
        arrays = compute()
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(path)  # atomic: a concurrent reader never sees half a file
        return arrays
    with np.load(path) as z:
        return {name: z[name] for name in z.files}
