"""Reading and writing FLAME-format model files, safely and without chumpy.

Formats read (and written back by :func:`save_flame_model`):

* ``.pkl``: the official FLAME 2020 ``generic_model.pkl`` (a Python 2 pickle
  with chumpy ``Ch`` objects and a scipy-sparse ``J_regressor``), FLAME 2023
  pickles, and what smplx reads. Written back as a plain-numpy pickle with a
  sparse ``J_regressor``, which smplx and this module both read.
* ``.npz``: the same keys as plain arrays (``J_regressor`` dense).
* ``flame_static_embedding.pkl`` (51 landmarks) and ``flame_dynamic_embedding.npy`` (the
  79 x 17 jaw-contour table, a pickled dict inside a .npy), read with the same unpickler.

:func:`load_flame_folder` reads a FLAME download folder (or one model file) into
:class:`FlameModelData`, which carries the arrays *and* the landmark tables found beside
them, so "which contour table goes with this model" is decided here, once.

Pickles can run arbitrary code when loaded, so they go through
:class:`RestrictedUnpickler`, which resolves only the numpy names that arrays
need and turns chumpy and scipy-sparse objects into inert shells whose arrays
are read out afterwards. Nothing else is ever imported or called: a pickle
that asks for ``os.system`` fails with :class:`ModelFileError` before any of
it runs. chumpy need not be installed.
"""
from __future__ import annotations

import _compat_pickle
import codecs
import dataclasses
import io
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy._core.multiarray as multiarray
import numpy._core.numeric as numeric
import numpy.lib.format as npy_format

from .params import JOINT_NAMES, N_CONTOUR, N_STATIC, N_YAW_BINS

REQUIRED_KEYS = ("v_template", "f", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table")
# Names of the model file in a FLAME folder, in the order they are tried.
MODEL_FILE_NAMES = ("FLAME_NEUTRAL.pkl", "generic_model.pkl", "FLAME_GENERIC.pkl",
                    "flame2023.pkl", "flame2023_no_jaw.pkl", "model.npz")
STATIC_EMBEDDING_NAME = "flame_static_embedding.pkl"
DYNAMIC_EMBEDDING_NAME = "flame_dynamic_embedding.npy"


class ModelFileError(ValueError):
    """A model or landmark file is missing, unreadable, unsafe or malformed."""


# --------------------------------------------------------------------------
# Restricted unpickling


class _Shell:
    """Stands in for a chumpy or scipy-sparse object: keeps its state, runs nothing."""

    qualified_name = "?"

    def __setstate__(self, state: Any) -> None:
        self.state = state


_SHELL_CLASSES: dict[str, type] = {}


def _shell_class(module: str, name: str) -> type:
    key = f"{module}.{name}"
    if key not in _SHELL_CLASSES:
        _SHELL_CLASSES[key] = type(name, (_Shell,), {"qualified_name": key})
    return _SHELL_CLASSES[key]


def _numpy_global(name: str) -> Any:
    table = {"_reconstruct": multiarray._reconstruct, "scalar": multiarray.scalar,
             "_frombuffer": numeric._frombuffer}
    return table[name]


# (module, name) pairs a FLAME pickle legitimately contains. Python 2 module
# names are mapped by pickle's fix_imports before they reach find_class.
_NUMPY_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray", "numpy.core.numeric", "numpy._core.numeric")
_SAFE_BUILTINS = {("builtins", "set"): set, ("builtins", "frozenset"): frozenset,
                  ("builtins", "object"): object, ("builtins", "complex"): complex,
                  ("builtins", "slice"): slice, ("_codecs", "encode"): codecs.encode}
_SPARSE_CLASSES = {"csc_matrix", "csr_matrix", "coo_matrix", "csc_array", "csr_array", "coo_array"}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that only builds numpy arrays, builtin containers and shells.

    Raises :class:`ModelFileError` for any other global, before calling it.
    """

    def __init__(self, file: io.BufferedIOBase, source: str):
        super().__init__(file, encoding="latin1")
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 names (copy_reg, __builtin__), as pickle's own find_class maps them.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if module in _NUMPY_MODULES and name in ("_reconstruct", "scalar", "_frombuffer"):
            return _numpy_global(name)
        if module.startswith("numpy.dtypes") and name.endswith("DType"):
            return getattr(np.dtypes, name)
        if (module, name) in _SAFE_BUILTINS:
            return _SAFE_BUILTINS[(module, name)]
        if module == "copyreg" and name == "_reconstructor":
            return _safe_reconstructor
        if module == "chumpy" or module.startswith("chumpy."):
            return _shell_class(module, name)
        if module.startswith("scipy.sparse") and name in _SPARSE_CLASSES:
            return _shell_class("scipy.sparse", name)
        raise ModelFileError(
            f"{self.source}: refused to load: the pickle asks for '{module}.{name}', which a FLAME "
            "model or landmark file never contains, and loading it could run arbitrary code. "
            "Use the files from the FLAME website (flame.is.tue.mpg.de) or convert the model to .npz.")


def _safe_reconstructor(cls: type, base: type, state: Any) -> Any:
    """copyreg._reconstructor, limited to shells and plain objects."""
    if not (isinstance(cls, type) and issubclass(cls, _Shell)) or base is not object or state is not None:
        raise ModelFileError(f"refused to reconstruct {cls!r} from a pickle")
    return object.__new__(cls)


# The largest array a model file may ask us to allocate (FLAME 2023's shapedirs: 5,023 x 3 x 400 doubles,
# 48 MB): a file that asks for more is refused before anything is allocated (a 1 kB pickle can ask for TBs).
MAX_ARRAY_BYTES = 1 << 30
# Nesting deeper than numpy's dimensions is no array (a FLAME file's lists, if any, are 2 deep).
MAX_LIST_DEPTH = 64


def _count_list_elements(value: Any, key: str, source: str) -> int:
    """The numbers a (nested) list or tuple holds, shared references counted every time they appear.

    A pickle's memo lets a few bytes reference one list 10^4 times at every level, so
    ``[[[0.5] * 10**4] * 10**4] * 10**4`` unpickles from about 150 kB into 10^12 elements that ``np.asarray``
    would walk for hours: the count is memoised per list object (never materialised), so it takes time
    in proportion to the pickle, and stops as soon as it passes :data:`MAX_ARRAY_BYTES` (8 bytes a number).
    Raises :class:`ModelFileError` naming the key when it does, for a list that contains itself, and for
    lists nested deeper than :data:`MAX_LIST_DEPTH`.
    """
    limit = MAX_ARRAY_BYTES // 8
    counted: dict[int, int] = {}  # id of a list -> its count (the objects stay alive: ``value`` holds them)

    def fail(message: str) -> ModelFileError:
        return ModelFileError(f"{source}: key '{key}' {message}; no FLAME file does: it is corrupt or hostile. "
                              "Use the files from the FLAME website (flame.is.tue.mpg.de) or convert the model "
                              "to .npz.")

    def too_big() -> ModelFileError:
        return fail(f"holds nested lists of more than {limit:,} numbers (more than the "
                    f"{MAX_ARRAY_BYTES / 2**30:.0f} GiB any FLAME array may take)")

    # Depth-first without recursion: (the list, its items' running total, the index of the next item).
    stack: list[list] = [[value, 0, 0]]
    open_lists = {id(value)}
    while stack:
        frame = stack[-1]
        container, index = frame[0], frame[2]
        if index == len(container):
            stack.pop()
            open_lists.discard(id(container))
            counted[id(container)] = frame[1]
            if stack:
                stack[-1][1] += frame[1]
                if stack[-1][1] > limit:
                    raise too_big()
            continue
        frame[2] += 1
        item = container[index]
        if isinstance(item, (list, tuple)):
            if id(item) in open_lists:
                raise fail("holds a list that contains itself")
            if id(item) in counted:
                frame[1] += counted[id(item)]
            elif len(stack) >= MAX_LIST_DEPTH:
                raise fail(f"holds lists nested more than {MAX_LIST_DEPTH} deep")
            else:
                stack.append([item, 0, 0])
                open_lists.add(id(item))
                continue
        else:
            frame[1] += item.size if isinstance(item, np.ndarray) else 1
        if frame[1] > limit:
            raise too_big()
    return counted[id(value)]


def _as_array(value: Any, key: str, source: str, dtype: Any = None) -> np.ndarray:
    """``np.asarray(value, dtype)`` for a value read from a file: (nested) lists are counted first
    (:func:`_count_list_elements`), and a conversion that fails or runs out of memory is a
    :class:`ModelFileError` naming the file and the key."""
    if isinstance(value, (list, tuple)):
        _count_list_elements(value, key, source)
    try:
        return np.asarray(value, dtype=dtype)
    except MemoryError:
        raise ModelFileError(f"{source}: key '{key}' asks for more memory than a FLAME file ever needs; it is "
                             "corrupt or hostile") from None
    except (ValueError, TypeError, OverflowError, RecursionError) as error:
        raise ModelFileError(f"{source}: key '{key}' is not an array of numbers ({type(error).__name__}: "
                             f"{error})") from None


def _to_plain(value: Any, key: str, source: str) -> Any:
    """Turn shells (and in-memory scipy sparse matrices) into numpy arrays; leave the rest."""
    if hasattr(value, "toarray") and hasattr(value, "nnz"):  # a scipy sparse matrix built in memory
        return value.toarray()
    if not isinstance(value, _Shell):
        return value
    state = getattr(value, "state", None)
    name = type(value).qualified_name
    if name.startswith("chumpy") and isinstance(state, dict) and "x" in state:
        return _as_array(state["x"], key, source)
    if name.startswith("scipy.sparse") and isinstance(state, dict):
        return _dense_from_sparse_state(state, name, key, source)
    raise ModelFileError(
        f"{source}: key '{key}' is a {name} object that is not a plain array "
        "(a chumpy expression?); this loader reads only stored arrays. Re-export the model with "
        "its arrays evaluated, e.g. as .npz.")


def _dense_from_sparse_state(state: dict, name: str, key: str, source: str) -> np.ndarray:
    """Dense array from the pickled state of a scipy sparse matrix (no scipy objects built).

    The shape is checked against :data:`MAX_ARRAY_BYTES` before the array is allocated, and every
    index against the shape (a negative index would silently wrap to the last row).
    """
    def fail(message: str) -> ModelFileError:
        return ModelFileError(f"{source}: key '{key}' holds a malformed sparse matrix ({message})")

    shape = state.get("_shape", state.get("shape", ())) if isinstance(state, dict) else ()
    if not (isinstance(shape, (tuple, list)) and len(shape) == 2 and all(isinstance(n, (int, np.integer)) and n >= 0
                                                                         for n in shape)):
        raise fail(f"its shape {shape!r} is not two non-negative integers")
    if 8 * int(shape[0]) * int(shape[1]) > MAX_ARRAY_BYTES:
        raise fail(f"its shape {tuple(shape)} would need {8 * int(shape[0]) * int(shape[1]) / 2**30:.1f} GiB, more "
                   f"than any FLAME array ({MAX_ARRAY_BYTES / 2**30:.0f} GiB at most)")
    try:
        data = _as_array(state.get("data"), key, source, np.float64)
        if name.endswith(("csc_matrix", "csc_array", "csr_matrix", "csr_array")):
            indices, indptr = (_as_array(state["indices"], key, source, np.int64),
                               _as_array(state["indptr"], key, source, np.int64))
            outer = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
            rows, columns = (indices, outer) if "csc" in name else (outer, indices)
        else:
            coords = state.get("coords") or (state["row"], state["col"])
            rows, columns = _as_array(coords[0], key, source, np.int64), _as_array(coords[1], key, source, np.int64)
    except ModelFileError:
        raise
    except (KeyError, IndexError, ValueError, TypeError) as error:
        raise fail(str(error)) from None
    if not (len(rows) == len(columns) == len(data)):
        raise fail(f"{len(data)} values for {len(rows)} positions")
    for what, index, size in (("row", rows, shape[0]), ("column", columns, shape[1])):
        if index.size and (index.min() < 0 or index.max() >= size):
            raise fail(f"a {what} index outside 0..{size - 1}")
    dense = np.zeros(tuple(int(n) for n in shape), dtype=np.float64)
    np.add.at(dense, (rows, columns), data)
    return dense


def safe_unpickle(path: Path) -> Any:
    """Load a pickle through :class:`RestrictedUnpickler`; clear errors for bad files."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: file not found. Check the path, or use the embedded default model "
                             "(model=None / 'default').")
    try:
        with open(path, "rb") as file:
            return RestrictedUnpickler(file, str(path)).load()
    except ModelFileError:
        raise
    except MemoryError:
        raise ModelFileError(f"{path}: refused: the pickle asks for more memory than a FLAME file ever needs; "
                             "it is corrupt or hostile") from None
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError, IndexError) as error:
        raise ModelFileError(f"{path}: not a readable pickle ({type(error).__name__}: {error}); the file may be "
                             "truncated or of another format. Download it again.") from error


# --------------------------------------------------------------------------
# The model


@dataclass(frozen=True)
class FlameModelData:
    """The arrays of a FLAME-format model, validated, float64.

    Attributes:
        v_template: ``V x 3`` template vertices (metres).
        faces: ``F x 3`` int64 triangle indices.
        shapedirs: ``V x 3 x K`` shape (columns 0..299) and expression
            (columns 300..) blend shapes, K = 400 in FLAME.
        posedirs: ``V x 3 x 9(J-1)`` pose correctives.
        joint_regressor: ``J x V`` dense.
        weights: ``V x J`` skinning weights.
        parents: length-J tuple, parent of each joint (-1 for the root).
        source: where it came from, for error messages.
        static_embedding: the 51 static landmarks (:func:`validate_embedding`'s dict), if known.
        dynamic_embedding: the contour table, if known.
        is_embedded_default: True only for the embedded default head.
    """

    v_template: np.ndarray
    faces: np.ndarray
    shapedirs: np.ndarray
    posedirs: np.ndarray
    joint_regressor: np.ndarray
    weights: np.ndarray
    parents: tuple[int, ...]
    source: str = "<memory>"
    static_embedding: dict | None = None  # lmk_face_idx 51, lmk_b_coords 51 x 3
    dynamic_embedding: dict | None = None  # lmk_face_idx 79 x 17, lmk_b_coords 79 x 17 x 3
    is_embedded_default: bool = False  # the head built by ringnet_lib.default_head, not a FLAME file

    @property
    def n_vertices(self) -> int:
        return self.v_template.shape[0]

    def to_flame_dict(self) -> dict[str, Any]:
        """The arrays under FLAME's pickle keys (``J_regressor`` dense)."""
        parents = np.array(self.parents, dtype=np.int64)
        parents[0] = np.iinfo(np.uint32).max  # FLAME stores the root's parent as 2^32 - 1
        return {"v_template": self.v_template, "f": self.faces.astype(np.uint32), "shapedirs": self.shapedirs,
                "posedirs": self.posedirs, "J_regressor": self.joint_regressor, "weights": self.weights,
                "kintree_table": np.stack([parents, np.arange(len(self.parents))])}


def flame_model_from_dict(raw: dict, source: str = "<memory>") -> FlameModelData:
    """Validate a dict with FLAME's keys and build :class:`FlameModelData`."""
    if not isinstance(raw, dict):
        raise ModelFileError(f"{source}: expected a dict of arrays (a FLAME model), found {type(raw).__name__}")
    missing = [key for key in REQUIRED_KEYS if key not in raw]
    if missing:
        raise ModelFileError(f"{source}: missing key(s) {missing}; a FLAME model file has {list(REQUIRED_KEYS)}. "
                             "Is this a FLAME model (not a landmark embedding or another body model)?")
    arrays = {key: _as_array(_to_plain(raw[key], key, source), key, source) for key in REQUIRED_KEYS}

    def fail(key: str, message: str) -> None:
        raise ModelFileError(f"{source}: '{key}' {message}")

    v_template = arrays["v_template"]
    if v_template.ndim != 2 or v_template.shape[1] != 3:
        fail("v_template", f"must be V x 3, got {v_template.shape}")
    n_vertices = v_template.shape[0]
    faces = arrays["f"]
    if faces.ndim != 2 or faces.shape[1] != 3 or not np.issubdtype(faces.dtype, np.integer):
        fail("f", f"must be F x 3 integers, got {faces.shape} {faces.dtype}")
    if faces.size and (faces.min() < 0 or faces.max() >= n_vertices):
        fail("f", f"indexes vertices outside 0..{n_vertices - 1}")
    kintree = arrays["kintree_table"]
    if kintree.ndim != 2 or kintree.shape[0] != 2:
        fail("kintree_table", f"must be 2 x J, got {kintree.shape}")
    if kintree.dtype.kind not in "fiu":
        fail("kintree_table", f"must hold integers, got {kintree.dtype}")
    n_joints = kintree.shape[1]
    if n_joints != len(JOINT_NAMES):
        fail("kintree_table", f"has {n_joints} joints; FLAME has {len(JOINT_NAMES)} {JOINT_NAMES}")
    parents = [-1] + [int(p) for p in kintree[0, 1:]]
    if any(not 0 <= p < j for j, p in enumerate(parents) if j):
        fail("kintree_table", f"parents {parents} must come before their children")
    expected = {"shapedirs": (n_vertices, 3, None), "posedirs": (n_vertices, 3, 9 * (n_joints - 1)),
                "J_regressor": (n_joints, n_vertices), "weights": (n_vertices, n_joints)}
    for key, shape in expected.items():
        array = arrays[key]
        if array.ndim != len(shape) or any(e is not None and e != a for e, a in zip(shape, array.shape)):
            wanted = ", ".join("K" if e is None else str(e) for e in shape)
            fail(key, f"must have shape ({wanted}), got {array.shape}")
        if array.dtype.kind not in "fiu":
            fail(key, f"must hold real numbers, got {array.dtype}")
    if v_template.dtype.kind not in "fiu":
        fail("v_template", f"must hold real numbers, got {v_template.dtype}")
    if len(faces) == 0:
        fail("f", "has no faces; a FLAME mesh has triangles")
    for key in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights"):
        if not np.all(np.isfinite(arrays[key])):
            fail(key, "contains NaN or Inf")
    row_sums = arrays["weights"].sum(axis=1)
    if np.abs(row_sums - 1.0).max() > 1e-3:
        worst = int(np.abs(row_sums - 1.0).argmax())
        fail("weights", f"rows must sum to 1 (each vertex's skinning weights); vertex {worst} sums to "
                        f"{row_sums[worst]:.4g}")
    return FlameModelData(
        v_template=arrays["v_template"].astype(np.float64), faces=faces.astype(np.int64),
        shapedirs=arrays["shapedirs"].astype(np.float64), posedirs=arrays["posedirs"].astype(np.float64),
        joint_regressor=arrays["J_regressor"].astype(np.float64), weights=arrays["weights"].astype(np.float64),
        parents=tuple(parents), source=source)


def load_flame_model(path: str | Path) -> FlameModelData:
    """Load a FLAME model from a ``.pkl`` (official, chumpy or plain) or ``.npz`` file."""
    path = Path(path)
    if path.is_dir():
        path = find_model_file(path)
    if path.suffix == ".npz":
        if not path.is_file():
            raise ModelFileError(f"{path}: file not found")
        try:
            with np.load(path, allow_pickle=False) as data:
                raw = {key: data[key] for key in data.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
            raise ModelFileError(f"{path}: not a readable .npz ({error}); the file may be truncated.") from error
    else:
        raw = safe_unpickle(path)
    return flame_model_from_dict(raw, str(path))


def load_flame_folder(path: str | Path) -> FlameModelData:
    """A FLAME download folder (or one model file): the model and the landmark files beside it.

    ``flame_static_embedding.pkl`` and ``flame_dynamic_embedding.npy`` are read when present
    (their absence is not an error here: :class:`ringnet_lib.decoder.Decoder` says what is
    missing when it needs them).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise ModelFileError(f"{path}: no such file or folder. Pass the folder that holds the FLAME files, a model "
                             "file, or None for the embedded default head.")
    model = load_flame_model(path)
    folder = path if path.is_dir() else path.parent
    n_faces = len(model.faces)
    static_path, dynamic_path = folder / STATIC_EMBEDDING_NAME, folder / DYNAMIC_EMBEDDING_NAME
    return dataclasses.replace(
        model, static_embedding=load_static_embedding(static_path, n_faces) if static_path.is_file() else None,
        dynamic_embedding=load_dynamic_embedding(dynamic_path, n_faces) if dynamic_path.is_file() else None)


def save_flame_model(model: FlameModelData, path: str | Path) -> Path:
    """Write ``model`` as ``.pkl`` (FLAME layout, sparse J_regressor, no chumpy) or ``.npz``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = model.to_flame_dict()
    if path.suffix == ".npz":
        np.savez(path, **data)
    else:
        import scipy.sparse  # lazy: 0.25 s to import; only writing a .pkl needs it
        data["J_regressor"] = scipy.sparse.csc_matrix(data["J_regressor"])
        with open(path, "wb") as file:
            pickle.dump(data, file, protocol=2)
    return path


def find_model_file(folder: Path) -> Path:
    """The FLAME model file inside ``folder`` (see :data:`MODEL_FILE_NAMES`)."""
    for name in MODEL_FILE_NAMES:
        if (folder / name).is_file():
            return folder / name
    raise ModelFileError(f"{folder}: no FLAME model file found; expected one of {list(MODEL_FILE_NAMES)}. "
                         "Put the files from the FLAME download there, or use the embedded default model.")


# --------------------------------------------------------------------------
# Landmark embeddings


def validate_embedding(raw: Any, source: str, n_faces: int | None = None,
                       leading_shape: tuple[int, ...] | None = None) -> dict[str, np.ndarray]:
    """Check ``lmk_face_idx`` (``...``) and ``lmk_b_coords`` (``... x 3``) of an embedding."""
    if not isinstance(raw, dict) or "lmk_face_idx" not in raw or "lmk_b_coords" not in raw:
        raise ModelFileError(f"{source}: a landmark embedding must be a dict with 'lmk_face_idx' and 'lmk_b_coords'")
    face_idx = _as_array(_to_plain(raw["lmk_face_idx"], "lmk_face_idx", source), "lmk_face_idx", source)
    coords = _as_array(_to_plain(raw["lmk_b_coords"], "lmk_b_coords", source), "lmk_b_coords", source, np.float64)
    if not np.issubdtype(face_idx.dtype, np.integer):
        raise ModelFileError(f"{source}: 'lmk_face_idx' must be integers, got {face_idx.dtype}")
    if leading_shape is not None and face_idx.shape != leading_shape:
        raise ModelFileError(f"{source}: 'lmk_face_idx' must have shape {leading_shape}, got {face_idx.shape}")
    if coords.shape != face_idx.shape + (3,):
        raise ModelFileError(f"{source}: 'lmk_b_coords' must have shape {face_idx.shape + (3,)}, got {coords.shape}")
    if n_faces is not None and face_idx.size and (face_idx.min() < 0 or face_idx.max() >= n_faces):
        raise ModelFileError(f"{source}: 'lmk_face_idx' has indices outside 0..{n_faces - 1} "
                             "(is it the embedding of another mesh?)")
    if not np.all(np.isfinite(coords)):
        raise ModelFileError(f"{source}: 'lmk_b_coords' contains NaN or Inf")
    return {"lmk_face_idx": face_idx.astype(np.int64), "lmk_b_coords": coords}


def load_static_embedding(path: str | Path, n_faces: int | None = None) -> dict[str, np.ndarray]:
    """Load ``flame_static_embedding.pkl`` (51 landmarks), safely."""
    return validate_embedding(safe_unpickle(Path(path)), str(path), n_faces, leading_shape=(N_STATIC,))


def _read_npy_object(path: Path) -> Any:
    """The object pickled inside a .npy file, through :class:`RestrictedUnpickler` (never ``allow_pickle``)."""
    if not path.is_file():
        raise ModelFileError(f"{path}: file not found")
    try:
        with open(path, "rb") as file:
            version = npy_format.read_magic(file)
            read_header = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
            shape, _, dtype = read_header(file)
            if not dtype.hasobject:
                raise ModelFileError(f"{path}: holds a plain {dtype} array of shape {shape}; "
                                     "a dynamic embedding is a pickled dict (np.save of a dict)")
            payload = RestrictedUnpickler(file, str(path)).load()
    except ModelFileError:
        raise
    except Exception as error:  # a truncated or foreign file: say which file
        raise ModelFileError(f"{path}: not a readable .npy dynamic embedding ({type(error).__name__}: {error})") \
            from error
    return payload[()] if isinstance(payload, np.ndarray) and payload.shape == () else payload


def load_dynamic_embedding(path: str | Path, n_faces: int | None = None) -> dict[str, np.ndarray]:
    """Read ``flame_dynamic_embedding.npy`` (the contour table), safely.

    Args:
        path: the .npy file (a pickled dict, as FLAME ships it and smplx reads it).
        n_faces: if given, face indices must be below it.
    Returns:
        dict ``lmk_face_idx`` ``79 x 17`` int64, ``lmk_b_coords`` ``79 x 17 x 3`` float64.
    Raises:
        ModelFileError naming the file and the field for wrong shapes or indices.
    """
    path = Path(path)
    return validate_embedding(_read_npy_object(path), str(path), n_faces, leading_shape=(N_YAW_BINS, N_CONTOUR))


def save_dynamic_embedding(embedding: dict, path: str | Path) -> Path:
    """Write a contour table in FLAME's format: ``np.save`` of a dict (smplx reads it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"lmk_face_idx": np.asarray(embedding["lmk_face_idx"], dtype=np.int64),
            "lmk_b_coords": np.asarray(embedding["lmk_b_coords"], dtype=np.float64)}
    with open(path, "wb") as file:  # a file object: np.save would append ".npy" to other names
        np.save(file, np.array(data, dtype=object), allow_pickle=True)
    return path


def save_static_embedding(embedding: dict[str, np.ndarray], path: str | Path) -> Path:
    path = Path(path)
    with open(path, "wb") as file:
        pickle.dump({"lmk_face_idx": np.asarray(embedding["lmk_face_idx"], dtype=np.int64),
                     "lmk_b_coords": np.asarray(embedding["lmk_b_coords"], dtype=np.float64)}, file, protocol=2)
    return path


# --------------------------------------------------------------------------
# Folders


def write_flame_folder(model: FlameModelData, folder: str | Path, model_name: str = "FLAME_NEUTRAL.pkl") -> Path:
    """Write a folder laid out as FLAME's download (model, and the landmark files ``model`` carries),
    which ``smplx.FLAME(model_path=folder)`` and :func:`load_flame_folder` read."""
    folder = Path(folder)
    save_flame_model(model, folder / model_name)
    if model.static_embedding is not None:
        save_static_embedding(model.static_embedding, folder / STATIC_EMBEDDING_NAME)
    if model.dynamic_embedding is not None:
        save_dynamic_embedding(model.dynamic_embedding, folder / DYNAMIC_EMBEDDING_NAME)
    return folder
