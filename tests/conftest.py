"""Shared fixtures: FLAME-format model folders written by the tests themselves."""
from __future__ import annotations

import dataclasses

import pytest

from ringnet_lib import model_io, testing
from ringnet_lib.default_head import default_model


@pytest.fixture(scope="session")
def random_model_dict() -> dict:
    return testing.random_flame_dict(n_vertices=400, seed=3)


@pytest.fixture(scope="session")
def random_model_folders(tmp_path_factory, random_model_dict) -> dict:
    """The same random model as a plain folder (smplx reads it) and as a chumpy-style pickle.

    Both have the static landmark embedding and no contour table (tests that need one write
    their own folder).
    """
    root = tmp_path_factory.mktemp("random_flame")
    model = model_io.flame_model_from_dict(random_model_dict)
    embedding = testing.random_static_embedding(len(model.faces), seed=3)
    plain = model_io.write_flame_folder(dataclasses.replace(model, static_embedding=embedding), root / "plain")
    chumpy_dir = root / "chumpy"
    chumpy_dir.mkdir()
    testing.write_chumpy_style_pickle(random_model_dict, chumpy_dir / "generic_model.pkl")
    model_io.save_static_embedding(embedding, chumpy_dir / model_io.STATIC_EMBEDDING_NAME)
    return {"plain": plain, "chumpy": chumpy_dir, "embedding": embedding}


@pytest.fixture(scope="session")
def default_model_folder(tmp_path_factory):
    """The embedded default head written as a FLAME folder (model, static embedding and contour table), for smplx."""
    model = default_model()
    assert model.static_embedding is not None and model.dynamic_embedding is not None
    folder = model_io.write_flame_folder(model, tmp_path_factory.mktemp("default_flame"))
    assert (folder / model_io.DYNAMIC_EMBEDDING_NAME).is_file()
    return folder
