"""Faces in photos: detection, crops, and a dataset (docs/dataset_format.md) from a folder of photo folders.

    python -m ringnet_lib.data.photos PHOTOS_DIR OUT_DIR --size 224

    PHOTOS_DIR/
        alice/ 001.jpg 002.png ...
        bob/   a.jpg ...

Detectors, tried in this order by ``detector="auto"``:

* **dlib** (the optional ``photos`` extra: ``pip install dlib-bin face-recognition-models``): a face
  box and 68 iBUG landmarks. Its model file (``shape_predictor_68_face_landmarks.dat``) was
  trained on the iBUG 300-W images, which are licensed for research use only: check that this
  fits your use. Datasets and ``--method fit`` need its 68 landmarks.
* **the LBP cascade** that scikit-image ships (OpenCV's frontal-face cascade,
  ``skimage.data.lbp_frontal_face_cascade_filename()``): a face box, no landmarks, no extra
  needed. Enough for the demo's crop.

Any callable ``image H x W x 3 uint8 -> list of Face`` can be passed instead. Photos larger
than :data:`DETECTION_SIDE` are downscaled for detection (and the results scaled back), and
the report says so. The face is cropped loosely (a square centred on the landmarks, whose
extent covers :data:`CROP_FILL` of it, as the synthetic data and RingNet's training crops; from a
cascade box, the same square estimated from the box, :data:`BOX_EXTENT`), resized to ``size``.

Photos that cannot be read, or where no face is found, are skipped, counted and named in the
report; a photo with several faces keeps the largest (also reported). When the photos left cannot
make a single ring (2 of one person and 1 of another), nothing is written. The output folder is
never the photo folder, inside it or around it, and ``--overwrite`` replaces only a dataset.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..checks import check_memory
from ..params import N_LANDMARKS
from .dataset import METADATA_NAME, DatasetFormatError, check_output_folder, new_dataset_folder, write_metadata
from .images import IMAGE_SUFFIXES, ImageError, read_image

CROP_FILL = 0.55  # landmark extent / crop side: the middle of the synthetic range (0.45, 0.6)
# The cascade's box spans forehead to mouth, the 68 landmarks brows to chin. On skimage's astronaut the
# landmarks' extent is 0.94 of the box's side (93 px vs 99 px) and their centre 0.19 box sides lower
# (y 133 vs 114.5): a crop from the box uses both, so it frames the face as a landmark crop does.
BOX_EXTENT = 0.94
BOX_CENTRE_DROP = 0.19
DETECTION_SIDE = 1024  # photos with a longer side are downscaled to this for detection
# Memory of the dataset builder, to refuse a --size that cannot fit before any photo is read: a crop is made
# and saved one at a time, measured at 10 bytes per pixel (PIL's RGBX transform, the numpy RGB copy, PIL's
# image of it for the PNG encoder; 4,096 and 8,192 px), and every photo keeps its landmarks, confidences and
# name until metadata.npz is written (about 2 kB, copied once more when stacked and validated).
CROP_BYTES_PER_PIXEL = 16
BYTES_PER_PHOTO = 8 * 2**10
MIN_PHOTOS_PER_SUBJECT = 2  # a ring's subject needs 2 views (data/rings.py), and it needs 1 other person


class NoFaceError(ValueError):
    """No face was found in a photo; the message names the file and says what to try."""


@dataclass
class Face:
    """One detected face, in pixels of the photo (pixel-corner convention of :mod:`ringnet_lib.camera`)."""

    box: tuple[float, float, float, float]  # left, top, width, height
    landmarks: np.ndarray | None = None  # 68 x 2 (x, y), when the detector gives them

    @property
    def area(self) -> float:
        return float(self.box[2] * self.box[3])

    def crop_box(self) -> tuple[float, float, float]:
        """The loose square crop (left, top, side) around this face."""
        if self.landmarks is not None:
            return loose_square(self.landmarks)
        left, top, width, height = self.box
        side = BOX_EXTENT * max(width, height) / CROP_FILL
        return left + width / 2 - side / 2, top + (0.5 + BOX_CENTRE_DROP) * height - side / 2, side

    def scaled(self, factor: float) -> "Face":
        left, top, width, height = self.box
        return Face((left * factor, top * factor, width * factor, height * factor),
                    None if self.landmarks is None else self.landmarks * factor)


Detector = Callable[[np.ndarray], list]  # H x W x 3 uint8 -> [Face]


def dlib_available() -> bool:
    """True when the ``photos`` extra (dlib and its 68-point model) is installed."""
    return all(importlib.util.find_spec(name) is not None for name in ("dlib", "face_recognition_models"))


def dlib_detector(upsample: int = 1) -> Detector:
    """dlib's frontal face detector + 68-point predictor (the optional extra; see the module docstring)."""
    if not dlib_available():
        raise ImportError("68 landmarks need the optional photos extra: pip install dlib-bin face-recognition-models "
                          "(the 68-point model was trained on iBUG 300-W, research use only), or pass your own "
                          "detector function")
    import dlib  # lazy: the optional photos extra, imported only when asked for

    # Find the model file without importing face_recognition_models: its __init__ needs
    # pkg_resources, which recent setuptools no longer ships.
    spec = importlib.util.find_spec("face_recognition_models")
    model_file = Path(list(spec.submodule_search_locations)[0]) / "models" / "shape_predictor_68_face_landmarks.dat"
    face_detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(model_file))

    def detect(image: np.ndarray) -> list[Face]:
        faces = []
        for box in face_detector(image, upsample):
            points = np.array([[p.x, p.y] for p in predictor(image, box).parts()], dtype=np.float64)
            # dlib's integer pixel indices are pixel centres; camera.py's pixel corners are 0.5 less.
            faces.append(Face((box.left(), box.top(), box.width(), box.height()), points + 0.5))
        return faces

    return detect


def cascade_detector() -> Detector:
    """scikit-image's LBP frontal-face cascade: face boxes, no landmarks, no extra needed."""
    from skimage.data import lbp_frontal_face_cascade_filename  # lazy: skimage.data takes 0.5 s to import
    from skimage.feature import Cascade  # lazy: as above, only when a cascade is built

    cascade = Cascade(lbp_frontal_face_cascade_filename())

    def detect(image: np.ndarray) -> list[Face]:
        short = min(image.shape[:2])
        low = max(24, short // 12)
        found = cascade.detect_multi_scale(img=image, scale_factor=1.2, step_ratio=1, min_size=(low, low),
                                           max_size=(short, short))
        return [Face((float(d["c"]), float(d["r"]), float(d["width"]), float(d["height"]))) for d in found]

    return detect


def get_detector(detector: str | Detector = "auto", landmarks: bool = False) -> tuple[Detector, str]:
    """A detector and its name. ``"auto"``: dlib if installed, else the cascade (unless ``landmarks`` are needed)."""
    if callable(detector):
        return detector, "your detector"
    if detector == "dlib" or (detector == "auto" and (landmarks or dlib_available())):
        return dlib_detector(), "dlib"
    if detector in ("cascade", "auto"):
        return cascade_detector(), "the LBP cascade"
    raise ValueError(f"detector must be 'auto', 'dlib', 'cascade' or a function, got {detector!r}")


def detect_largest_face(image: np.ndarray, detect: Detector, source: str = "the photo") -> tuple[Face, str]:
    """The largest face in ``image`` (downscaled first when large), and a note on what was done.

    Raises :class:`NoFaceError` (naming ``source``) when there is none.
    """
    note = []
    factor = min(1.0, DETECTION_SIDE / max(image.shape[:2]))
    small = image
    if factor < 1.0:
        small = np.asarray(Image.fromarray(image).resize((round(image.shape[1] * factor),
                                                          round(image.shape[0] * factor)), Image.Resampling.BILINEAR))
        note.append(f"downscaled {image.shape[1]} x {image.shape[0]} to {small.shape[1]} x {small.shape[0]} for "
                    "detection")
    faces = [face for face in detect(small) if face.landmarks is None
             or (face.landmarks.shape == (N_LANDMARKS, 2) and np.isfinite(face.landmarks).all())]
    if not faces:
        raise NoFaceError(f"{source}: no face found; use a photo with a clear, roughly frontal face"
                          + (" (or install the photos extra for dlib's detector)" if not dlib_available() else ""))
    if len(faces) > 1:
        note.append(f"{len(faces)} faces found; kept the largest")
    face = max(faces, key=lambda f: f.area)
    return (face if factor == 1.0 else face.scaled(1.0 / factor)), "; ".join(note)


def loose_square(landmarks: np.ndarray, fill: float = CROP_FILL) -> tuple[float, float, float]:
    """Square crop (left, top, side) in pixels, centred on the landmarks' box, which covers ``fill`` of it."""
    low, high = landmarks.min(axis=0), landmarks.max(axis=0)
    side = float((high - low).max() / fill)
    centre = (low + high) / 2
    return float(centre[0] - side / 2), float(centre[1] - side / 2), side


def resize_box(image: np.ndarray, box: tuple[float, float, float], size: int) -> np.ndarray:
    """Cut ``box`` = (left, top, side) out of ``H x W x 3`` uint8 and resize to ``size x size x 3``; outside the
    photo is black (PIL's EXTENT transform, pixel-corner coordinates as in camera.py)."""
    left, top, side = box
    extent = (left, top, left + side, top + side)
    return np.asarray(Image.fromarray(image).transform((size, size), Image.Transform.EXTENT, extent,
                                                       Image.Resampling.BILINEAR))


def crop_face(image: np.ndarray, face: Face, size: int) -> tuple[np.ndarray, np.ndarray | None, tuple]:
    """The loose square crop of ``face`` at ``size`` px, its landmarks in crop pixels (if any), and the box."""
    box = face.crop_box()
    left, top, side = box
    landmarks = None if face.landmarks is None else (face.landmarks - [left, top]) * (size / side)
    return resize_box(image, box, size), landmarks, box


# --------------------------------------------------------------------------
# Photo folders -> dataset


@dataclass
class BuildReport:
    written: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    several_faces: list[str] = field(default_factory=list)
    downscaled: list[str] = field(default_factory=list)
    single_image_identities: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"wrote {self.written} images; skipped {len(self.skipped)}"]
        lines += [f"  skipped {path}: {reason}" for path, reason in self.skipped]
        if self.several_faces:
            lines.append(f"  {len(self.several_faces)} photo(s) had several faces (kept the largest): "
                         + ", ".join(self.several_faces))
        if self.downscaled:
            lines.append(f"  {len(self.downscaled)} large photo(s) were downscaled for detection: "
                         + ", ".join(self.downscaled))
        if self.single_image_identities:
            lines.append(f"  {len(self.single_image_identities)} identit(y/ies) with one image (they can be the "
                         "other person of a ring, not its subject): " + ", ".join(self.single_image_identities))
        return "\n".join(lines)


def build_from_photos(source: str | Path, out: str | Path, size: int = 224, detector: Detector | str = "auto",
                      progress: bool = True, overwrite: bool = False) -> BuildReport:
    """Detect, crop and write every photo of ``source/<identity>/`` into the dataset folder ``out``.

    Written to a temporary folder and moved into place at the end (nothing half written). Refused
    before any photo is read: an ``out`` that is ``source``, lies inside it or holds it; a file or a
    folder that is not a dataset (:func:`~.dataset.check_output_folder`); a dataset unless ``overwrite``;
    a ``size`` that cannot fit in memory. Refused after detection, with nothing written: photos that
    cannot make a single ring (2 of one person and 1 of another).
    """
    source, out = Path(source), Path(out)
    if not source.is_dir():
        raise DatasetFormatError(f"{source}: not a folder (expected one sub-folder of photos per identity)")
    if size < 16:
        raise DatasetFormatError(f"--size {size}: crops must be at least 16 pixels")
    folders = sorted(p for p in source.iterdir() if p.is_dir())
    photos = [(f, p) for f in folders for p in sorted(f.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    if not photos:
        raise DatasetFormatError(f"{source}: no photos found ({', '.join(IMAGE_SUFFIXES)}) in {len(folders)} "
                                 f"sub-folder(s); expected {source}/<identity>/<photo>")
    check_apart(source, out)
    check_output_folder(out, overwrite)
    try:
        check_memory(f"--size {size}", CROP_BYTES_PER_PIXEL * size ** 2 + BYTES_PER_PHOTO * len(photos),
                     f"each crop is made and saved at {size} x {size} px: lower --size (RingNet uses 224)")
    except ValueError as error:
        raise DatasetFormatError(str(error)) from None
    try:
        detect, _ = get_detector(detector, landmarks=True)
    except ImportError as error:
        raise DatasetFormatError(f"a dataset needs 68 landmarks per photo: {error}") from None
    report, rows = BuildReport(), []
    with new_dataset_folder(out, overwrite) as staging:
        for folder, path in tqdm(photos, desc="photos", disable=not progress, mininterval=1.0):
            try:
                image = read_image(path)
                face, note = detect_largest_face(image, detect, str(path))
            except (ImageError, NoFaceError) as error:
                report.skipped.append((str(path), str(error).split(": ", 1)[-1]))
                continue
            if "faces found" in note:
                report.several_faces.append(str(path))
            if "downscaled" in note:
                report.downscaled.append(str(path))
            crop, landmarks, _ = crop_face(image, face, size)
            name = f"images/{folder.name}/{path.stem}.png"
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(crop).save(staging / name)
            inside = ((landmarks >= 0) & (landmarks <= size)).all(axis=1)
            rows.append((folder.name, name, landmarks, inside.astype(np.float32)))
        check_ring_possible(source, [r[0] for r in rows], report)
        names = sorted({r[0] for r in rows})
        counts = {n: sum(r[0] == n for r in rows) for n in names}
        report.single_image_identities = [n for n in names if counts[n] == 1]
        report.written = len(rows)
        description = json.dumps({"generator": "ringnet_lib.data.photos", "source": str(source), "size": size,
                                  "crop_fill": CROP_FILL, "skipped": report.skipped})
        write_metadata(staging, [r[1] for r in rows], np.array([names.index(r[0]) for r in rows]), names,
                       np.stack([r[2] for r in rows]), np.stack([r[3] for r in rows]), description=description)
    return report


def check_apart(source: Path, out: Path) -> None:
    """Refuse an ``out`` that is the photo folder, lies inside it or holds it: ``--overwrite`` would delete the
    photos, and a dataset inside them would be read as one more person's photos by the next run."""
    photo_folder, dataset = source.resolve(), out.resolve()
    where = ("is" if dataset == photo_folder else "lies inside" if photo_folder in dataset.parents
             else "holds" if dataset in photo_folder.parents else "")
    if where:
        raise DatasetFormatError(f"{out}: {where} the photo folder {source}; write the dataset to a folder "
                                 "outside the photos")


def check_ring_possible(source: Path, people: list[str], report: BuildReport) -> None:
    """Refuse, before anything is written, usable photos that cannot make a single ring (training would fail on
    them): at least :data:`MIN_PHOTOS_PER_SUBJECT` photos of one person and 1 of another are needed."""
    counts = Counter(people)
    if len(counts) >= 2 and max(counts.values()) >= MIN_PHOTOS_PER_SUBJECT:
        return
    # The skipped photos, relative to the folder, each with the gist of its reason (the full one names the
    # file again): the report that lists them all is printed only on success.
    gist = [f"{Path(path).relative_to(source)} ({re.split(r' [(]|; ', reason)[0]})" for path, reason in report.skipped]
    skipped = f"skipped {len(gist)}" + (": " + ", ".join(gist[:5]) if gist else "")
    skipped += f" and {len(gist) - 5} more" if len(gist) > 5 else ""
    if not people:
        raise DatasetFormatError(f"{source}: no usable photo ({skipped})")
    n, each = len(people), ", ".join(f"{person} {count}" for person, count in sorted(counts.items()))
    raise DatasetFormatError(f"{source}: {n} usable photo{'s' if n > 1 else ''} of {len(counts)} "
                             f"{'person' if len(counts) == 1 else 'people'} ({each}), and a ring needs "
                             f"{MIN_PHOTOS_PER_SUBJECT} photos of one person and 1 of another: add photos, one "
                             f"sub-folder per person ({skipped})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ringnet_lib.data.photos", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="folder with one sub-folder of photos per identity")
    parser.add_argument("out", help="dataset folder to write (new or empty)")
    parser.add_argument("--size", type=int, default=224, help="side of the crops, pixels")
    parser.add_argument("--overwrite", action="store_true", help="replace the dataset already in OUT (never a folder "
                        "that holds anything else)")
    args = parser.parse_args(argv)
    try:
        report = build_from_photos(args.source, args.out, args.size, overwrite=args.overwrite)
    except (DatasetFormatError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(report.summary())
    print(f"dataset: {Path(args.out) / METADATA_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
