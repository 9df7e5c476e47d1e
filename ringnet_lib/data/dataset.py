"""The on-disk dataset format (synthetic and real alike) and the Dataset that reads it.

A dataset is a folder with images and ONE metadata file, ``metadata.npz`` (numpy's
zip of arrays, read without pickle). The format is documented in
``docs/dataset_format.md``; in short:

=====================  ==============  ===============================================
key                    shape / dtype   meaning
=====================  ==============  ===============================================
format_version         () int          :data:`FORMAT_VERSION`
image                  N str           image path relative to the folder (posix)
identity               N int64         identity number, 0 .. M-1
identity_name          M str           name of each identity (e.g. the photo sub-folder)
landmarks              N x 68 x 2 f32  iBUG 68 points in PIXELS of the stored image (u, v)
confidence             N x 68 f32      in [0, 1], per landmark
shape/expression/...   optional        ground truth (see :data:`OPTIONAL_PER_IMAGE`)
neutral_vertices       M x V x 3       optional, each identity's neutral mesh (metres)
faces                  F x 3           optional, its triangles
description            () str          optional, how the data were made
=====================  ==============  ===============================================

Images are square (the tools crop them so). The Dataset returns landmarks in the
normalised coordinates of :mod:`ringnet_lib.camera` (+y up, [-1, 1]), so they do not
depend on the image size, and the ground truth under ``true_*`` names (``true_shape`` is
the true β of the image, never the prediction).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..camera import pixels_to_normalized
from ..params import N_CAMERA, N_EXPRESSION, N_FULL_POSE, N_LANDMARKS, N_SHAPE
from .augment import flip_sample
from .images import IMAGE_SUFFIXES, ImageError, read_image

FORMAT_VERSION = 1
METADATA_NAME = "metadata.npz"
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # an npz is a zip: its first entry, or the end of an empty zip
IMAGES_FOLDER = "images"  # the writers' images, in any sub-folders
# Per-image ground truth in the metadata: key -> size of its last dimension. Items carry them as true_<key>.
OPTIONAL_PER_IMAGE = {"shape": N_SHAPE, "expression": N_EXPRESSION, "pose": N_FULL_POSE, "camera": N_CAMERA}


class DatasetFormatError(ValueError):
    """The metadata or an image does not follow docs/dataset_format.md."""


class DatasetExistsError(DatasetFormatError):
    """The output folder already holds a dataset (``overwrite`` replaces it), or something else (never replaced)."""


def dataset_folder_problem(folder: Path) -> str | None:
    """Why ``folder`` is not a dataset this library wrote (naming what it holds), or None when it is one.

    The writers make exactly ``metadata.npz`` and ``images/``, whose files are images in any
    sub-folders (docs/dataset_format.md). Only such a folder may be replaced by ``overwrite``: anything
    else in it (a user's notes, photos beside it, a symbolic link) would be lost with it.
    """
    entries = sorted(folder.iterdir())
    if not (folder / METADATA_NAME).is_file() or (folder / METADATA_NAME).is_symlink():
        return f"it holds {_listed([_shown(entry) for entry in entries])} and no {METADATA_NAME}"
    others = [_shown(entry) for entry in entries if entry.name not in (METADATA_NAME, IMAGES_FOLDER)]
    images = folder / IMAGES_FOLDER
    if images.is_symlink() or (images.exists() and not images.is_dir()):
        others.append(_shown(images))
    elif images.is_dir():
        others += _not_images(images, folder)
    return f"it holds {_listed(others)} besides the dataset" if others else None


def _shown(path: Path) -> str:
    return path.name + ("/" if path.is_dir() and not path.is_symlink() else "")


def _listed(names: list[str], limit: int = 5) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _not_images(images: Path, root: Path) -> list[str]:
    """Paths (relative to ``root``) under ``images`` that no writer makes: files that are not images, links to
    folders. Links are not followed."""
    found = []
    for folder, subfolders, files in os.walk(images):
        here = Path(folder)
        found += [str((here / name).relative_to(root)) + "/" for name in subfolders if (here / name).is_symlink()]
        found += [str((here / name).relative_to(root)) for name in files
                  if Path(name).suffix.lower() not in IMAGE_SUFFIXES]
    return sorted(found)


def check_output_folder(out: str | Path, overwrite: bool = False) -> None:
    """Refuse, before any work, an output folder that writing a dataset into would lose or mix up.

    Refused: a symbolic link, a file, a non-empty folder that is not a dataset this library wrote
    (:func:`dataset_folder_problem`; never replaced, whatever ``overwrite``), and a dataset unless
    ``overwrite``. An absent or empty folder is fine.
    """
    out = Path(out)
    if out.is_symlink():
        raise DatasetExistsError(f"{out}: is a symbolic link; give the folder it points to, or another output folder")
    if not out.exists():
        return
    if not out.is_dir():
        raise DatasetExistsError(f"{out}: is a file, not a folder; choose another output folder (a file is never "
                                 "replaced)")
    if not any(out.iterdir()):
        return
    problem = dataset_folder_problem(out)
    if problem:
        raise DatasetExistsError(f"{out}: is not a dataset folder ({problem}); choose another output folder, new "
                                 f"or empty (only a folder of {METADATA_NAME} and {IMAGES_FOLDER}/ is ever replaced)")
    if not overwrite:
        raise DatasetExistsError(f"{out}: already holds a dataset; choose another output folder, or pass --overwrite "
                                 "to replace it (its images are removed)")


@contextlib.contextmanager
def new_dataset_folder(out: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """A temporary folder beside ``out`` to write a dataset into, moved to ``out`` when the block succeeds.

    An interrupted or failed write leaves nothing behind (and ``out`` untouched). ``out`` is checked
    before any work (:func:`check_output_folder`): ``overwrite`` replaces a dataset, old images
    included, only once the new dataset is complete, and never a folder that holds anything else.
    """
    out = Path(os.path.abspath(out))  # "." or "x/..": the staging folder must lie beside out, not in it
    check_output_folder(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield staging
        _move_into_place(staging, out, overwrite)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def _move_into_place(staging: Path, out: Path, overwrite: bool) -> None:
    """Rename ``staging`` to ``out``; an old dataset there is moved aside first, then removed file by file."""
    check_output_folder(out, overwrite)  # again: files may have been put there while the dataset was written
    if not out.exists():
        staging.rename(out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
    out.replace(old)  # an empty out, or a dataset: never anything else (checked just above)
    staging.rename(out)
    # Remove only what a dataset holds; rmdir (not rmtree) fails rather than delete anything else.
    if (old / IMAGES_FOLDER).is_dir():
        shutil.rmtree(old / IMAGES_FOLDER)
    (old / METADATA_NAME).unlink(missing_ok=True)
    old.rmdir()


def write_metadata(root: str | Path, image: Sequence[str], identity: np.ndarray, identity_name: Sequence[str],
                   landmarks: np.ndarray, confidence: np.ndarray, **optional) -> Path:
    """Validate and write ``root/metadata.npz``. ``optional``: ground-truth arrays and ``description``."""
    arrays = {"format_version": np.array(FORMAT_VERSION), "image": np.asarray(image, dtype=str),
              "identity": np.asarray(identity, dtype=np.int64), "identity_name": np.asarray(identity_name, dtype=str),
              "landmarks": np.asarray(landmarks, dtype=np.float32),
              "confidence": np.asarray(confidence, dtype=np.float32)}
    for key, value in optional.items():
        arrays[key] = np.asarray(value, dtype=str) if key == "description" else np.asarray(value)
    validate_metadata(arrays, str(root))
    path = Path(root) / METADATA_NAME
    np.savez_compressed(path, **arrays)
    return path


def validate_metadata(meta: dict, source: str) -> None:
    """Check everything docs/dataset_format.md promises; raise :class:`DatasetFormatError` naming the key
    (and the files) that break it: the format version, every dtype and shape, identities, finite values
    (ground truth included), confidences in [0, 1], landmarks within an image side of their image, and
    image paths that stay inside the dataset folder."""
    def fail(message: str) -> DatasetFormatError:
        return DatasetFormatError(f"{source}: {message} (see docs/dataset_format.md)")

    for key in ("format_version", "image", "identity", "identity_name", "landmarks", "confidence"):
        if key not in meta:
            raise fail(f"metadata has no '{key}'")
    version = np.asarray(meta["format_version"])
    if version.shape != () or version.dtype.kind not in "iu" or int(version) != FORMAT_VERSION:
        raise fail(f"'format_version' is {version.tolist()!r}; this ringnet_lib reads version {FORMAT_VERSION}")
    kinds = {"image": "U", "identity_name": "U", "identity": "iu", "landmarks": "fiu", "confidence": "fiu"}
    kinds.update({key: "fiu" for key in OPTIONAL_PER_IMAGE if key in meta})
    kinds.update({key: "fiu" for key in ("neutral_vertices", "faces") if key in meta})
    for key, allowed in kinds.items():
        if np.asarray(meta[key]).dtype.kind not in allowed:
            wanted = "strings" if allowed == "U" else "integers" if allowed == "iu" else "real numbers"
            raise fail(f"'{key}' must hold {wanted}, got {np.asarray(meta[key]).dtype}")
    n = len(meta["image"])
    if n == 0:
        raise fail("the dataset has no images")
    expected = {"identity": (n,), "landmarks": (n, N_LANDMARKS, 2), "confidence": (n, N_LANDMARKS)}
    expected.update({key: (n, size) for key, size in OPTIONAL_PER_IMAGE.items() if key in meta})
    for key, shape in expected.items():
        if tuple(meta[key].shape) != shape:
            raise fail(f"'{key}' must have shape {shape} for {n} images, got {tuple(meta[key].shape)}")
    identity, names = meta["identity"], meta["identity_name"]
    if identity.min() < 0 or identity.max() >= len(names):
        raise fail(f"'identity' must lie in 0..{len(names) - 1} (one name per identity)")
    for key in ("landmarks", "confidence", *[k for k in OPTIONAL_PER_IMAGE if k in meta]):
        bad = ~np.isfinite(meta[key]).reshape(n, -1).all(axis=1)
        if bad.any():
            raise fail(f"'{key}' has NaN/inf values for {bad.sum()} image(s): {', '.join(meta['image'][bad][:5])}")
    conf = meta["confidence"]
    if conf.min() < 0 or conf.max() > 1:
        raise fail("'confidence' must lie in [0, 1]")
    # Landmarks are pixels of a square crop in which the face spans at least a tenth of the side, so no
    # coordinate lies more than 10 face extents from the origin (the exact bound, with the image's side,
    # is checked when an image is loaded): 1e6 px, or normalised coordinates stored as pixels, are caught here.
    landmarks = np.asarray(meta["landmarks"], dtype=np.float64)
    extent = (landmarks.max(axis=1) - landmarks.min(axis=1)).max(axis=1)  # N, each face's size in pixels
    far = np.abs(landmarks).max(axis=(1, 2)) > 10 * np.maximum(extent, 1.0)
    if far.any():
        raise fail(f"'landmarks' lie far outside their images for {far.sum()} image(s) (pixels of the stored image "
                   f"are expected): {', '.join(meta['image'][far][:5])}")
    for name in meta["image"]:
        relative = Path(str(name))
        if relative.is_absolute() or ".." in relative.parts or not str(name):
            raise fail(f"image path {str(name)!r} must be relative and stay inside the dataset folder")
    if "neutral_vertices" in meta and len(meta["neutral_vertices"]) != len(names):
        raise fail(f"'neutral_vertices' needs one mesh per identity ({len(names)})")


def read_metadata(root: str | Path) -> dict[str, np.ndarray]:
    """Load and validate ``root/metadata.npz`` into a dict of arrays (never unpickling anything)."""
    path = Path(root) / METADATA_NAME
    if not path.is_file():
        raise DatasetFormatError(f"{path}: no such file; a dataset folder holds images and {METADATA_NAME} "
                                 "(make one with `python -m ringnet_lib.data.synthesize` or `... .photos`)")
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(ZIP_MAGIC[0]))
    except OSError as error:
        raise DatasetFormatError(f"{path}: cannot be read ({error.strerror})") from None
    # Checked first: given anything but a zip, np.load tries a pickle and refuses it with "allow_pickle",
    # which would call random bytes "arrays that need unpickling".
    if head not in ZIP_MAGIC:
        raise DatasetFormatError(f"{path}: not a readable .npz (it does not start as a zip archive: the file is "
                                 "corrupt, or not an npz); make the dataset again") from None
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = {key: data[key] for key in data.files}
    except ValueError as error:
        reason = " ".join(str(error).split())  # numpy's header errors span lines
        if "allow_pickle" in reason:  # an object array: numpy refuses to unpickle it
            raise DatasetFormatError(f"{path}: holds arrays numpy can only read by unpickling ({reason}); a "
                                     "dataset's metadata is plain arrays (see docs/dataset_format.md)") from None
        raise DatasetFormatError(f"{path}: not a readable .npz ({reason}); the file is corrupt: make the dataset "
                                 "again") from None
    except (OSError, EOFError, zipfile.BadZipFile) as error:
        raise DatasetFormatError(f"{path}: not a readable .npz ({type(error).__name__}: {error}); the file is "
                                 "corrupt or truncated: write it again") from None
    validate_metadata(meta, str(path))
    return meta


def load_image(path: Path, size: int | None = None) -> tuple[torch.Tensor, int]:
    """Read a square image (any bit depth, :func:`~ringnet_lib.data.images.read_image`) as ``3 x S x S``
    float in [0, 1], resized to ``size`` if given.

    Returns the image and its stored side (in which the metadata's pixel landmarks are given).

    Raises :class:`DatasetFormatError` naming the file if it cannot be decoded or is not square.
    """
    try:
        image = torch.from_numpy(read_image(path).copy()).permute(2, 0, 1)
    except ImageError as error:
        raise DatasetFormatError(str(error)) from None
    if image.shape[1] != image.shape[2]:
        raise DatasetFormatError(f"{path}: images must be square crops, got {image.shape[2]} x {image.shape[1]}")
    stored_size = image.shape[-1]
    image = image.float() / 255.0
    if size is not None and image.shape[-1] != size:
        image = torch.nn.functional.interpolate(image[None], size=(size, size), mode="bilinear",
                                                antialias=True, align_corners=False)[0].clamp(0, 1)
    return image, stored_size


class FaceDataset(torch.utils.data.Dataset):
    """Images, 68 landmarks and confidences (and ground truth when present) from a dataset folder.

    ``dataset[i]`` is one image; :meth:`ring` loads several (a ring) with a leading R.

    Args:
        root: the dataset folder.
        image_size: resize every image to this side (None: keep the stored size).
        missing: ``"skip"`` (default) drops items whose image file is missing and warns with
            their count and names (kept in :attr:`skipped`); ``"raise"`` raises instead.
    Items: dict with ``image`` 3 x S x S float [0, 1], ``landmarks`` 68 x 2 normalised,
    ``confidence`` 68, ``identity`` long, ``index`` long, ``flipped`` bool, and ``true_shape``,
    ``true_expression``, ``true_pose``, ``true_camera`` when the dataset has them (pose and camera
    are those of the unflipped image).
    """

    def __init__(self, root: str | Path, image_size: int | None = None, missing: str = "skip"):
        if missing not in ("skip", "raise"):
            raise ValueError("missing must be 'skip' or 'raise'")
        self.root = Path(root)
        self.meta = read_metadata(self.root)
        self.image_size = image_size
        exists = np.array([(self.root / name).is_file() for name in self.meta["image"]])
        self.skipped = [(str(self.root / name), "missing file") for name in self.meta["image"][~exists]]
        if self.skipped and missing == "raise":
            raise DatasetFormatError(f"{self.root}: {len(self.skipped)} image file(s) missing: "
                                     + ", ".join(path for path, _ in self.skipped[:10]))
        if self.skipped:
            warnings.warn(f"{self.root}: skipped {len(self.skipped)} item(s) whose image is missing: "
                          + ", ".join(path for path, _ in self.skipped[:10]), stacklevel=2)
        self.rows = np.nonzero(exists)[0]  # dataset index -> metadata row
        self.identity = self.meta["identity"][self.rows]  # per dataset index, for the ring builder
        self.ground_truth = [key for key in OPTIONAL_PER_IMAGE if key in self.meta]

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def identity_names(self) -> np.ndarray:
        return self.meta["identity_name"]

    @property
    def mean_camera(self) -> torch.Tensor | None:
        """``3``: the average ground-truth camera (a good starting camera for the encoder), when there is one."""
        if "camera" not in self.meta:
            return None
        return torch.as_tensor(self.meta["camera"][self.rows]).float().mean(dim=0)

    def item(self, index: int, flip: bool = False) -> dict[str, torch.Tensor]:
        """Image ``index``, mirrored left-right when ``flip`` (landmarks mirrored and re-indexed with
        :data:`~ringnet_lib.data.augment.IBUG68_FLIP`)."""
        row = self.rows[index]
        path = self.root / self.meta["image"][row]
        image, stored_size = load_image(path, self.image_size)
        pixels = torch.as_tensor(self.meta["landmarks"][row])
        if (pixels < -stored_size).any() or (pixels > 2 * stored_size).any():  # more than a side outside
            raise DatasetFormatError(f"{path}: its landmarks lie more than the image's side ({stored_size} px) "
                                     "outside it; metadata.npz must hold pixels of the stored image")
        landmarks = pixels_to_normalized(pixels, stored_size)
        item = {"image": image, "landmarks": landmarks.float(),
                "confidence": torch.as_tensor(self.meta["confidence"][row]).float(),
                "identity": torch.tensor(int(self.meta["identity"][row])), "index": torch.tensor(int(index))}
        item.update({f"true_{key}": torch.as_tensor(self.meta[key][row]).float() for key in self.ground_truth})
        if flip:
            item["image"], item["landmarks"], item["confidence"] = flip_sample(
                item["image"], item["landmarks"], item["confidence"])
        item["flipped"] = torch.tensor(bool(flip))
        return item

    def ring(self, indices, flips=None) -> dict[str, torch.Tensor]:
        """Several images as one ring item: ``images`` R x 3 x S x S and the other keys with a leading R."""
        flips = [False] * len(indices) if flips is None else flips
        items = [self.item(int(i), bool(f)) for i, f in zip(indices, flips)]
        ring = {key: torch.stack([item[key] for item in items]) for key in items[0]}
        ring["images"] = ring.pop("image")
        return ring

    def __getitem__(self, index) -> dict[str, torch.Tensor]:
        return self.item(int(index))
