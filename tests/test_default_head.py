"""Tests of the embedded default head (FLAME-format, not FLAME)."""
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse

from ringnet_lib.default_head import build as dh
from ringnet_lib.default_head import cache
from ringnet_lib.default_head import DEFAULT_HEAD_VERSION, default_model
from ringnet_lib.default_head.build import build_default_head
from ringnet_lib.default_head.contour_table import shipped_table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def head():
    return build_default_head()


@pytest.fixture(scope="module")
def part():
    return dh.eyeball_part()


def _rodrigues(r):
    th = np.linalg.norm(r)
    if th < 1e-12:
        return np.eye(3)
    k = r / th
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(th) * K + (1 - np.cos(th)) * K @ K


def _lbs(model, pose):
    """Plain numpy LBS with FLAME's kinematic chain. pose: 5 x 3 axis-angle -> V x 3."""
    X = model["v_template"]
    J = model["J_regressor"] @ X
    parents = model["kintree_table"][0].astype(np.int64)
    G = []
    for i in range(5):
        T = np.eye(4)
        T[:3, :3] = _rodrigues(pose[i])
        T[:3, 3] = J[i] - (J[parents[i]] if i else 0)
        G.append(T if i == 0 else G[parents[i]] @ T)
    G = np.stack(G)
    G[:, :3, 3] -= np.einsum("jab,jb->ja", G[:, :3, :3], J)
    T = np.einsum("vj,jab->vab", model["weights"], G)
    return np.einsum("vab,vb->va", T[:, :3, :3], X) + T[:, :3, 3]


def _edges(f):
    f = f.astype(np.int64)
    return np.unique(np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), 1), axis=0)


def _max_stretch(model, dirs):
    """Max edge-length ratio (stretch or squash) over +-1 of each column of dirs (V x 3 x K)."""
    X = model["v_template"]
    E = _edges(model["f"])
    L0 = np.linalg.norm(X[E[:, 0]] - X[E[:, 1]], axis=1)
    D = dirs[E[:, 0]] - dirs[E[:, 1]]                     # n_edges x 3 x K
    out = 0.0
    for sgn in (1, -1):
        L = np.linalg.norm((X[E[:, 0]] - X[E[:, 1]])[:, :, None] + sgn * D, axis=1)
        out = max(out, np.maximum(L / L0[:, None], L0[:, None] / L).max())
    return out


def _landmarks(model, emb, key="lmk"):
    fi = emb["lmk_face_idx"] if key == "lmk" else emb["frontal_contour_face_idx"]
    bc = emb["lmk_b_coords"] if key == "lmk" else emb["frontal_contour_b_coords"]
    tri = model["v_template"][model["f"][fi].astype(np.int64)]
    return np.einsum("lk,lkd->ld", bc, tri)


def test_keys_shapes_dtypes(head):
    m, e = head
    assert isinstance(DEFAULT_HEAD_VERSION, str)
    assert set(m) == {"v_template", "f", "shapedirs", "posedirs", "J_regressor", "weights",
                      "kintree_table"}
    V = len(m["v_template"])
    assert 2000 <= V <= 6000
    assert m["v_template"].dtype == np.float64 and m["v_template"].shape == (V, 3)
    assert m["f"].dtype == np.uint32 and m["f"].shape[1] == 3 and m["f"].max() == V - 1
    assert m["shapedirs"].shape == (V, 3, 400) and m["shapedirs"].dtype == np.float64
    assert m["posedirs"].shape == (V, 3, 36) and m["posedirs"].dtype == np.float64
    assert isinstance(m["J_regressor"], scipy.sparse.csc_matrix)
    assert m["J_regressor"].shape == (5, V) and m["J_regressor"].dtype == np.float64
    assert m["weights"].shape == (V, 5)
    np.testing.assert_array_equal(m["kintree_table"], [[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]])
    assert m["kintree_table"].dtype == np.int64
    assert e["lmk_face_idx"].shape == (51,) and e["lmk_face_idx"].dtype == np.int64
    assert e["lmk_b_coords"].shape == (51, 3)
    assert e["frontal_contour_face_idx"].shape == (17,) and e["frontal_contour_b_coords"].shape == (17, 3)
    for k in ("lmk_b_coords", "frontal_contour_b_coords"):
        assert (e[k] >= 0).all() and np.allclose(e[k].sum(1), 1)


def test_deterministic_in_process_and_across_processes(head):
    m, e = head
    m2, e2 = build_default_head()
    for k in ("v_template", "f", "shapedirs", "weights"):
        np.testing.assert_array_equal(m[k], m2[k])
    code = ("import hashlib,numpy as np;from ringnet_lib.default_head.build import build_default_head as b;"
            "m,e=b();h=hashlib.sha1();[h.update(np.ascontiguousarray(m[k]).tobytes()) for k in "
            "('v_template','f','shapedirs','weights')];h.update(m['J_regressor'].toarray().tobytes());"
            "h.update(e['lmk_b_coords'].tobytes());print(h.hexdigest())")
    import hashlib
    h = hashlib.sha1()
    for k in ("v_template", "f", "shapedirs", "weights"):
        h.update(np.ascontiguousarray(m[k]).tobytes())
    h.update(m["J_regressor"].toarray().tobytes())
    h.update(e["lmk_b_coords"].tobytes())
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == h.hexdigest()


def test_cached_arrays_cannot_be_corrupted(head):
    m, _ = head
    with pytest.raises(ValueError):
        m["v_template"][0, 0] = 1.0


def test_shipped_asset_matches_rebuild(tmp_path):
    path = tmp_path / "mesh.npz"
    dh.save_mesh_asset(path)
    with np.load(path) as new, np.load(dh.MESH_ASSET) as old:
        assert set(new.files) == set(old.files)
        for k in old.files:
            np.testing.assert_allclose(new[k], old[k], atol=1e-12, err_msg=k)


def test_cache_rebuild_equals_cached_arrays(tmp_path, monkeypatch):
    """A cache miss builds the head from its sources and writes it; the next process reads it back.

    The rebuild equals the arrays every process uses (read from the user's cache, or built) to 1e-6.
    """
    used = cache.default_arrays()
    monkeypatch.setenv("RINGNET_CACHE", str(tmp_path))
    assert cache.cache_dir() == tmp_path
    built = cache.default_arrays.__wrapped__()  # the lru_cache would return `used`
    path = tmp_path / f"default_head-{cache.fingerprint()}.npz"
    assert path.is_file()
    read_back = cache.default_arrays.__wrapped__()
    assert set(built) == set(read_back) == set(used)
    for key in used:
        np.testing.assert_array_equal(read_back[key], built[key], err_msg=key)
        np.testing.assert_allclose(built[key], used[key], rtol=0, atol=1e-6, err_msg=key)
        assert not built[key].flags.writeable and not read_back[key].flags.writeable


def test_default_model_is_the_built_head_with_both_tables(head):
    m, e = head
    model = default_model()
    assert model.is_embedded_default and model.source == cache.SOURCE
    np.testing.assert_allclose(model.v_template, m["v_template"], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(model.faces, m["f"].astype(np.int64))
    np.testing.assert_allclose(model.shapedirs, m["shapedirs"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(model.joint_regressor, m["J_regressor"].toarray(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(model.weights, m["weights"], rtol=0, atol=1e-6)
    assert model.parents == (-1, 0, 1, 1, 1)
    np.testing.assert_array_equal(model.static_embedding["lmk_face_idx"], e["lmk_face_idx"])
    np.testing.assert_allclose(model.static_embedding["lmk_b_coords"], e["lmk_b_coords"], rtol=0, atol=1e-12)
    table = shipped_table()
    np.testing.assert_array_equal(model.dynamic_embedding["lmk_face_idx"], table["lmk_face_idx"])
    np.testing.assert_array_equal(model.dynamic_embedding["lmk_b_coords"], table["lmk_b_coords"])
    assert model.dynamic_embedding["lmk_face_idx"].shape == (79, 17)


def test_closed_consistently_oriented_components(head, part):
    import trimesh
    m, _ = head
    mesh = trimesh.Trimesh(m["v_template"], m["f"].astype(np.int64), process=False)
    assert mesh.is_watertight and mesh.is_winding_consistent
    comps = mesh.split(only_watertight=False)
    assert len(comps) == 3                     # skin + two eyeballs
    for c in comps:
        assert c.is_watertight and c.volume > 0  # outward normals
    ext = m["v_template"][part == 0].max(0) - m["v_template"][part == 0].min(0)
    assert 0.14 < ext[0] < 0.19 and 0.12 < ext[2] < 0.26


def test_head_size_and_frame(head, part):
    m, e = head
    X = m["v_template"]
    lm = _landmarks(m, e)
    chin_y = _landmarks(m, e, "contour")[8, 1]
    height = X[:, 1].max() - chin_y
    assert 0.21 < height < 0.26, height
    assert lm[30 - 17, 2] > X[part == 0, 2].mean() + 0.08  # face looks towards +z


def test_exact_mirror_symmetry(head):
    m, e = head
    X, mir = m["v_template"], e["mirror_vertex_index"]
    assert mir.shape == (len(X),) and mir.dtype == np.int64
    np.testing.assert_array_equal(mir[mir], np.arange(len(X)))
    np.testing.assert_allclose(X[mir], X * [-1, 1, 1], atol=1e-12)
    # the mirror map sends faces to faces
    F = np.sort(m["f"].astype(np.int64), 1)
    Fm = np.sort(mir[m["f"].astype(np.int64)], 1)
    assert set(map(tuple, F)) == set(map(tuple, Fm))
    W = m["weights"][:, [0, 1, 2, 4, 3]]    # left/right eye swap under the mirror
    np.testing.assert_allclose(m["weights"][mir], W, atol=1e-12)


def test_weights(head, part):
    m, _ = head
    W, X = m["weights"], m["v_template"]
    assert (W >= 0).all() and np.allclose(W.sum(1), 1)
    assert np.all(W[part == 1, 3] == 1) and np.all(W[part == 2, 4] == 1)
    assert W[np.argmin(X[:, 1]), 0] == 1                   # neck stump bottom = root
    assert W[np.argmax(X[:, 1]), 1] == 1                   # crown follows the neck joint
    lower_lip = _landmarks(m, *[build_default_head()[1]])[57 - 17]
    chin = np.argmin(np.linalg.norm(X - lower_lip - [0, -0.03, -0.01], axis=1))
    assert W[chin, 2] > 0.8                                 # chin follows the jaw
    forehead = np.argmin(np.linalg.norm(X - [0, 0.06, 0.1], axis=1))
    assert W[forehead, 2] == pytest.approx(0, abs=1e-3)


def test_joint_regressor_and_joint_locations(head, part):
    m, e = head
    R, X = m["J_regressor"], m["v_template"]
    assert np.allclose(np.asarray(R.sum(1)).ravel(), 1) and R.min() >= 0
    J = R @ X
    root, neck, jaw, leye, reye = J
    for eye, p in ((leye, 1), (reye, 2)):
        ev = X[part == p]
        r = np.linalg.norm(ev - eye, axis=1)
        assert r.max() - r.min() < 1e-6                   # centre of its eyeball
    assert leye[0] > 0.02 and reye[0] < -0.02
    np.testing.assert_allclose(leye * [-1, 1, 1], reye, atol=1e-9)
    assert root[1] == pytest.approx(X[:, 1].min(), abs=2e-3)
    assert root[1] + 0.08 < neck[1] < jaw[1] < leye[1]
    lm = _landmarks(m, e)
    assert jaw[2] < lm[48 - 17, 2] - 0.05                  # hinge well behind the mouth corner
    assert abs(jaw[0]) < 1e-9 and abs(neck[0]) < 1e-9 and abs(root[0]) < 1e-9
    # joints move with shape: the regressor follows a head-width change
    Xs = X + 2 * m["shapedirs"][:, :, 0]
    assert not np.allclose(R @ Xs, J)


def test_shape_space(head, part):
    m, _ = head
    S = m["shapedirs"]
    n = np.linalg.norm(S, axis=(0, 1))
    assert np.all(np.diff(n[:100]) < 0)                    # strictly decreasing variance
    peak = np.abs(S).max(axis=(0, 1))
    assert 0.003 < peak[0] < 0.015                        # a few mm to ~1 cm per std
    assert peak[100:300].max() < 0.0005
    U = S[:, :, :300].reshape(-1, 300)
    U = U / np.linalg.norm(U, axis=0)
    C = U.T @ U
    assert np.abs(C - np.eye(300)).max() < 1e-6          # no redundant components
    # smooth: a 1-std change of any component never tears or collapses edges
    assert _max_stretch(m, S[:, :, :300]) < 2.5
    # eyeballs move rigidly with the shape
    for p in (1, 2):
        disp = S[part == p, :, :300]
        assert np.abs(disp - disp[:1]).max() < 1e-12


def test_expression_space(head, part):
    m, e = head
    S = m["shapedirs"][:, :, 300:]
    peak = np.abs(S).max(axis=(0, 1))
    assert np.all(peak[:50] > 0.001) and np.all(peak[50:] < 0.0005)
    assert np.abs(S[part > 0]).max() == 0
    assert _max_stretch(m, S) < 3.5   # lips part by design; nothing tears
    # expression 0 opens the mouth: inner lips part
    lm = _landmarks(m, e)
    X = m["v_template"] + 2 * S[:, :, 0]
    m2 = dict(m, v_template=X)
    lm2 = _landmarks(m2, e)
    gap0 = lm[62 - 17, 1] - lm[66 - 17, 1]
    gap2 = lm2[62 - 17, 1] - lm2[66 - 17, 1]
    assert gap2 > gap0 + 0.01


def test_landmarks_on_features(head):
    m, e = head
    lm = _landmarks(m, e)
    L = {i: lm[i - 17] for i in range(17, 68)}
    nose = np.array([L[i] for i in range(27, 36)])
    assert np.argmax(nose[:, 2]) == 30 - 27               # nose tip sticks out most
    le, re = m["J_regressor"][[3, 4]] @ m["v_template"]
    for i in range(42, 48):                               # left eye landmarks around left eye
        assert L[i][0] > 0 and np.linalg.norm(L[i][:2] - le[:2]) < 0.025
    for i in range(36, 42):
        assert L[i][0] < 0 and np.linalg.norm(L[i][:2] - re[:2]) < 0.025
    chin_y = _landmarks(m, e, "contour")[8, 1]
    for i in range(48, 68):
        assert chin_y < L[i][1] < L[33][1]                  # mouth between nose and chin
    for i in range(17, 27):
        assert L[i][1] > le[1] + 0.01                       # brows above the eyes
    assert L[17][0] < L[21][0] < 0 < L[22][0] < L[26][0]  # iBUG order, image left first
    assert L[36][0] < L[39][0] < 0 < L[42][0] < L[45][0]
    assert L[48][0] < 0 < L[54][0]
    c = _landmarks(m, e, "contour")
    assert c[0][0] < -0.05 and c[16][0] > 0.05 and c[8][1] < L[57][1] - 0.02


def test_skinning_stretch_and_rigid_parts(head, part):
    m, _ = head
    X = m["v_template"]
    E = _edges(m["f"])
    L0 = np.linalg.norm(X[E[:, 0]] - X[E[:, 1]], axis=1)
    J = m["J_regressor"] @ X
    for joint, aa, limit in ((2, [0.3, 0, 0], 2.5), (1, [0, 0.5, 0], 2.5)):
        pose = np.zeros((5, 3))
        pose[joint] = aa
        Y = _lbs(m, pose)
        L = np.linalg.norm(Y[E[:, 0]] - Y[E[:, 1]], axis=1)
        ratio = np.maximum(L / L0, L0 / L).max()
        assert ratio < limit, (joint, ratio)
        bottom = X[:, 1] < X[:, 1].min() + 1e-4
        assert np.abs(Y[bottom] - X[bottom]).max() < 1e-9  # root stays put
        if joint == 2:
            lip = np.argmin(np.linalg.norm(X - [0, -0.066, 0.09], axis=1))
            assert Y[lip, 1] < X[lip, 1] - 0.015           # jaw opening moves the lower lip down
        else:
            nose = np.argmax(X[:, 2])
            assert Y[nose, 0] > X[nose, 0] + 0.03          # head turns
    # eyes follow the eye joints
    pose = np.zeros((5, 3))
    pose[3] = [0, 0.4, 0]
    Y = _lbs(m, pose)
    r = np.linalg.norm(Y[part == 1] - J[3], axis=1)
    assert r.max() - r.min() < 1e-9
    assert np.abs(Y[part == 1] - X[part == 1]).max() > 0.003
    assert np.abs(Y[part != 1] - X[part != 1]).max() < 1e-12


def test_smplx_loads(head, tmp_path):
    torch = pytest.importorskip("torch")
    smplx = pytest.importorskip("smplx")
    m, e = head
    with open(tmp_path / "FLAME_NEUTRAL.pkl", "wb") as fh:
        pickle.dump(m, fh)
    with open(tmp_path / "flame_static_embedding.pkl", "wb") as fh:
        pickle.dump({"lmk_face_idx": e["lmk_face_idx"], "lmk_b_coords": e["lmk_b_coords"]}, fh)
    import contextlib
    import io
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        flame = smplx.FLAME(model_path=str(tmp_path), num_betas=100, num_expression_coeffs=50)
    assert "only" not in buf.getvalue()
    assert flame.shapedirs.shape[-1] == 100 and flame.expr_dirs.shape[-1] == 50
    with torch.no_grad():
        out = flame()
    np.testing.assert_allclose(out.vertices[0].numpy(), m["v_template"], atol=1e-5)
    assert out.joints.shape[1] == 5 + 51
    with torch.no_grad():
        out = flame(jaw_pose=torch.tensor([[0.3, 0.0, 0.0]]), expression=torch.ones(1, 50))
    assert torch.isfinite(out.vertices).all()
