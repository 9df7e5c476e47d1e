"""The built default head, cached on disk so that a fresh process gets ``FLAME()`` in a fraction of a second.

Building the blend shapes takes about 1.5 s (random fields and two QR factorisations; 16-23 s
on a busy machine), and every CLI call, notebook and test process needs the head. The first
build on a machine writes the arrays to ``<cache>/default_head-<fingerprint>.npz``
(uncompressed, about 50 MB); later processes read them back. The fingerprint hashes the
shipped mesh and contour table and the builder's source, so any change to the head
rebuilds it. ``<cache>`` is ``$RINGNET_CACHE``, else ``$XDG_CACHE_HOME/ringnet_lib``, else
``~/.cache/ringnet_lib``; when it cannot be written the head is built in memory each time.
``tests/test_default_head.py`` checks that a rebuild equals the cached arrays to 1e-6.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np

from ..model_io import FlameModelData, flame_model_from_dict, validate_embedding
from ..params import N_CONTOUR, N_STATIC, N_YAW_BINS

HERE = Path(__file__).parent
SOURCE = "embedded default head"
_FINGERPRINTED = ("assets/mesh.npz", "assets/flame_dynamic_embedding.npy", "geometry.py", "blendshapes.py",
                  "build.py", "cache.py")
_MODEL_KEYS = ("v_template", "f", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table")


def cache_dir() -> Path:
    """Where built arrays are kept (see the module docstring)."""
    if os.environ.get("RINGNET_CACHE"):
        return Path(os.environ["RINGNET_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "ringnet_lib"


def fingerprint() -> str:
    """Hash of everything the built head depends on (shipped assets and builder source)."""
    digest = hashlib.sha256()
    for name in _FINGERPRINTED:
        digest.update(name.encode())
        digest.update((HERE / name).read_bytes())
    return digest.hexdigest()[:20]


def build_arrays() -> dict[str, np.ndarray]:
    """Build the head from its sources: FLAME's model keys (``J_regressor`` dense) plus ``lmk_face_idx``,
    ``lmk_b_coords`` (51 static landmarks) and ``contour_face_idx``, ``contour_b_coords`` (the table)."""
    from .build import build_default_head  # lazy: the builder (scipy.optimize, ...) only on a cache miss
    from .contour_table import shipped_table  # lazy: as above

    model, static = build_default_head()
    arrays = {key: np.asarray(model[key].toarray() if hasattr(model[key], "toarray") else model[key])
              for key in _MODEL_KEYS}
    table = shipped_table()
    arrays.update(lmk_face_idx=static["lmk_face_idx"], lmk_b_coords=static["lmk_b_coords"],
                  contour_face_idx=table["lmk_face_idx"], contour_b_coords=table["lmk_b_coords"])
    return arrays


def _write_atomically(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` as an uncompressed ``.npz`` at ``path`` through a temporary file; give up quietly on OSError."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(handle, "wb") as file:
            np.savez(file, **arrays)
        os.replace(temporary, path)  # another process may write the same file: the last rename wins, both complete
    except OSError:
        pass  # a read-only home: build in memory each time, as before the cache existed


@functools.lru_cache(maxsize=1)
def default_arrays() -> dict[str, np.ndarray]:
    """The built head's arrays, read from the cache or built (and cached) now; read-only."""
    path = cache_dir() / f"default_head-{fingerprint()}.npz"
    arrays = None
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
        except (OSError, ValueError, EOFError):
            arrays = None  # a damaged cache file: rebuild it
    if arrays is None:
        arrays = build_arrays()
        _write_atomically(path, arrays)
    for value in arrays.values():
        value.setflags(write=False)
    return arrays


@functools.lru_cache(maxsize=1)
def default_model() -> FlameModelData:
    """The embedded default head as :class:`~ringnet_lib.model_io.FlameModelData`, with its 51 static
    landmarks and its contour table, validated as a real FLAME file is."""
    arrays = default_arrays()
    model = flame_model_from_dict({key: arrays[key] for key in _MODEL_KEYS}, source=SOURCE)
    n_faces = len(model.faces)
    static = validate_embedding({"lmk_face_idx": arrays["lmk_face_idx"], "lmk_b_coords": arrays["lmk_b_coords"]},
                                SOURCE, n_faces, leading_shape=(N_STATIC,))
    table = validate_embedding({"lmk_face_idx": arrays["contour_face_idx"],
                                "lmk_b_coords": arrays["contour_b_coords"]}, SOURCE, n_faces, (N_YAW_BINS, N_CONTOUR))
    return dataclasses.replace(model, static_embedding=static, dynamic_embedding=table, is_embedded_default=True)
