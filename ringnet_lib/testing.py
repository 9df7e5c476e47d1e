"""Random but valid FLAME-format models, for tests and benchmarks.

They have FLAME's layout (5 joints, 400 blend-shape columns, 36 pose
correctives) but random geometry, so that conformance tests exercise every
term of the decoder, pose correctives included (the default head has none).
Their landmark files (:func:`random_static_embedding`, :func:`random_dynamic_embedding`,
both in :func:`write_random_flame_folder`) are random too, in FLAME's formats.
The chumpy-style writer reproduces how the official FLAME 2020 pickle stores
its arrays, without chumpy installed.
"""
from __future__ import annotations

import dataclasses
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import scipy.sparse

from .data.photos import Face
from .model_io import FlameModelData, flame_model_from_dict, write_flame_folder
from .params import N_CONTOUR, N_EXPRESSION, N_FULL_POSE, N_SHAPE, N_STATIC, N_YAW_BINS

FLAME_KINTREE = np.array([[np.iinfo(np.uint32).max, 0, 1, 1, 1], [0, 1, 2, 3, 4]], dtype=np.int64)


def random_flame_dict(n_vertices: int = 500, seed: int = 0, n_columns: int = 400) -> dict:
    """A dict with FLAME's pickle keys and random, valid content (J_regressor dense)."""
    rng = np.random.default_rng(seed)
    template = rng.normal(scale=0.08, size=(n_vertices, 3))
    faces = np.stack([rng.choice(n_vertices, size=3, replace=False) for _ in range(2 * n_vertices)])
    regressor = np.zeros((5, n_vertices))
    for joint in range(5):
        chosen = rng.choice(n_vertices, size=12, replace=False)
        regressor[joint, chosen] = rng.dirichlet(np.ones(12))
    logits = rng.normal(scale=2.0, size=(n_vertices, 5))
    weights = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return {"v_template": template, "f": faces.astype(np.uint32),
            "shapedirs": rng.normal(scale=2e-3, size=(n_vertices, 3, n_columns)),
            "posedirs": rng.normal(scale=2e-3, size=(n_vertices, 3, 36)),
            "J_regressor": regressor, "weights": weights, "kintree_table": FLAME_KINTREE.copy()}


def random_static_embedding(n_faces: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed + 1)
    return {"lmk_face_idx": rng.choice(n_faces, size=N_STATIC, replace=False).astype(np.int64),
            "lmk_b_coords": rng.dirichlet(np.ones(3), size=N_STATIC)}


def random_dynamic_embedding(n_faces: int, seed: int = 0) -> dict:
    """A random but valid contour table: 79 yaw bins x 17 faces + barycentric coordinates.

    The layout :func:`ringnet_lib.model_io.load_dynamic_embedding` reads, so that
    :class:`~ringnet_lib.decoder.Decoder` gives 68 landmarks on random models.
    """
    rng = np.random.default_rng(seed + 2)
    return {"lmk_face_idx": rng.integers(n_faces, size=(N_YAW_BINS, N_CONTOUR), dtype=np.int64),
            "lmk_b_coords": rng.dirichlet(np.ones(3), size=(N_YAW_BINS, N_CONTOUR))}


def random_flame_model(n_vertices: int = 500, seed: int = 0, landmarks: bool = True) -> FlameModelData:
    """A random model; with ``landmarks``, it carries a random static embedding and contour table."""
    model = flame_model_from_dict(random_flame_dict(n_vertices, seed), source=f"random model (seed {seed})")
    if not landmarks:
        return model
    n_faces = len(model.faces)
    return dataclasses.replace(model, static_embedding=random_static_embedding(n_faces, seed),
                               dynamic_embedding=random_dynamic_embedding(n_faces, seed))


def write_random_flame_folder(folder: str | Path, n_vertices: int = 500, seed: int = 0) -> Path:
    """A random model as a FLAME download folder: model, static embedding and contour table."""
    return write_flame_folder(random_flame_model(n_vertices, seed), folder)


def write_chumpy_style_pickle(raw: dict, path: str | Path, protocol: int = 2) -> Path:
    """Write ``raw`` the way the official FLAME 2020 pickle stores it.

    ``v_template``, ``shapedirs``, ``posedirs`` and ``J`` become ``chumpy.ch.Ch``
    objects (pickled state: a dict whose ``x`` is the array, plus chumpy's
    bookkeeping), ``J_regressor`` a ``scipy.sparse.csc_matrix``, and the extra
    keys ``bs_style``/``bs_type`` are added. A stand-in ``chumpy`` module is
    registered only while writing, so chumpy need not be installed.
    """
    chumpy = types.ModuleType("chumpy")
    chumpy_ch = types.ModuleType("chumpy.ch")

    class Ch:  # what pickle records as chumpy.ch.Ch
        def __init__(self, x):
            self.__dict__.update({"x": np.asarray(x), "_dirty_vars": {"x"}, "_itr": None,
                                  "_depends_on_deps": {}, "_make_dense": False, "_make_sparse": False})

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    chumpy_ch.Ch, chumpy.ch = Ch, chumpy_ch
    saved = {name: sys.modules.get(name) for name in ("chumpy", "chumpy.ch")}
    sys.modules.update({"chumpy": chumpy, "chumpy.ch": chumpy_ch})
    try:
        data = dict(raw)
        regressor = np.asarray(data["J_regressor"])
        data["J"] = Ch(regressor @ np.asarray(data["v_template"]))
        for key in ("v_template", "shapedirs", "posedirs"):
            data[key] = Ch(data[key])
        data["J_regressor"] = scipy.sparse.csc_matrix(regressor)
        data["bs_style"], data["bs_type"] = "lbs", "lrotmin"
        with open(path, "wb") as file:
            pickle.dump(data, file, protocol=protocol)
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    return Path(path)


def random_parameters(batch: int, seed: int, dtype=np.float32, pose_scale: float = 0.4):
    """Random β (B x 100), ψ (B x 50) and all 15 pose values (B x 15), as numpy arrays."""
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(batch, N_SHAPE)).astype(dtype), rng.normal(size=(batch, N_EXPRESSION)).astype(dtype),
            (pose_scale * rng.normal(size=(batch, N_FULL_POSE))).astype(dtype))


def fake_face_detector(image: np.ndarray) -> list[Face]:
    """A stand-in for dlib in tests of the photo tools: 68 points on a ring around the photo's centre, and no
    face at all on an all-black photo. Returns ``photos.Face`` records, as the real detector does."""
    if image.max() == 0:
        return []
    h, w = image.shape[:2]
    angle = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    landmarks = np.stack([w / 2 + 0.2 * w * np.cos(angle), h / 2 + 0.2 * h * np.sin(angle)], axis=1)
    return [Face((0.3 * w, 0.3 * h, 0.4 * w, 0.4 * h), landmarks)]
