"""The default head's jaw-contour table (``flame_dynamic_embedding.npy`` in FLAME's format).

:func:`ringnet_lib.contour.build_dynamic_embedding` takes about 10 s on this head, so its
result is shipped as ``assets/flame_dynamic_embedding.npy``; a test checks that rebuilding
reproduces it. Rebuild after changing the head:

    python -m ringnet_lib.default_head --rebuild
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..contour import build_dynamic_embedding, skin_face_mask
from ..model_io import load_dynamic_embedding, save_dynamic_embedding
from .build import build_default_head

TABLE_ASSET = Path(__file__).parent / "assets" / "flame_dynamic_embedding.npy"


def builder_inputs() -> dict[str, np.ndarray]:
    """What :func:`ringnet_lib.contour.build_dynamic_embedding` needs for the default head, as keyword arguments."""
    model, static = build_default_head()
    faces = np.asarray(model["f"], dtype=np.int64)
    vertices = model["v_template"]
    # At |yaw| near 39 the nose outline passes in front of the far cheek; the jaw contour must
    # not jump onto it, so the nose (the part of the face ahead of z = 85 mm above the mouth) is out.
    centroids = vertices[faces].mean(1)
    nose = (centroids[:, 2] > 0.085) & (centroids[:, 1] > -0.05)
    return {"vertices": vertices, "faces": faces, "frontal_face_idx": static["frontal_contour_face_idx"],
            "frontal_b_coords": static["frontal_contour_b_coords"],
            "mirror_vertex_index": static["mirror_vertex_index"],
            "face_mask": skin_face_mask(model["weights"], faces) & ~nose}


def build_table() -> dict[str, np.ndarray]:
    """Run the builder on the default head (about 10 s)."""
    return build_dynamic_embedding(**builder_inputs())


def shipped_table() -> dict[str, np.ndarray]:
    """The shipped table (built and written first if the file is missing)."""
    if not TABLE_ASSET.is_file():
        save_dynamic_embedding(build_table(), TABLE_ASSET)
    return load_dynamic_embedding(TABLE_ASSET)
