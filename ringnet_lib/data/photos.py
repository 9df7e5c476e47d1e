"""Build a dataset (docs/dataset_format.md) from a folder of photos, one sub-folder per identity.

    python -m ringnet_lib.data.photos PHOTOS_DIR OUT_DIR --size 224

    PHOTOS_DIR/
        alice/ 001.jpg 002.png ...
        bob/   a.jpg ...

Each photo goes through a 68-point landmark detector; the face is cropped loosely
(a square centred on the landmarks, :data:`CROP_FILL` of it covered by their extent,
as the synthetic data and RingNet's training crops), resized to ``size`` and saved with
its landmarks. Detector confidences: dlib gives none, so detected points get 1 and
points outside the crop 0.

The default detector is dlib's 68-point shape predictor, an OPTIONAL extra, imported only
when used: ``pip install dlib-bin face-recognition-models``. Its model file
(``shape_predictor_68_face_landmarks.dat``) was trained on the iBUG 300-W images, which are
licensed for research use only: check that this fits your use. Any callable
``image H x W x 3 uint8 -> list of 68 x 2 pixel arrays`` (one per face) can be passed instead.

Photos that cannot be read, or where no face is found, are skipped, counted and named
in the report; a photo with several faces keeps the largest (also reported).
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm.auto import tqdm

from .dataset import DatasetFormatError, write_metadata

Detector = Callable[[np.ndarray], list]  # H x W x 3 uint8 -> [68 x 2 pixel (x, y) arrays]
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
CROP_FILL = 0.55  # landmark extent / crop side: the middle of the synthetic range (0.45, 0.6)


@dataclass
class BuildReport:
    written: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    several_faces: list[str] = field(default_factory=list)
    single_image_identities: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"wrote {self.written} images; skipped {len(self.skipped)}"]
        lines += [f"  skipped {path}: {reason}" for path, reason in self.skipped]
        if self.several_faces:
            lines.append(f"  {len(self.several_faces)} photo(s) had several faces (kept the largest): "
                         + ", ".join(self.several_faces))
        if self.single_image_identities:
            lines.append(f"  {len(self.single_image_identities)} identit(y/ies) with one image (the ring sampler "
                         "will skip them): " + ", ".join(self.single_image_identities))
        return "\n".join(lines)


def dlib_detector(upsample: int = 1) -> Detector:
    """dlib's frontal face detector + 68-point predictor (optional extra; see the module docstring)."""
    import importlib.util

    try:
        import dlib
        # Find the model file without importing face_recognition_models: its __init__ needs
        # pkg_resources, which recent setuptools no longer ships.
        spec = importlib.util.find_spec("face_recognition_models")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("face_recognition_models is not installed")
        model_file = Path(list(spec.submodule_search_locations)[0]) / "models" / "shape_predictor_68_face_landmarks.dat"
    except ImportError as error:
        raise ImportError("the photo tool's default detector needs the optional extra: "
                          "pip install dlib-bin face-recognition-models (the 68-point model was trained on "
                          "iBUG 300-W, research use only); or pass your own detector function") from error
    face_detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(model_file))

    def detect(image: np.ndarray) -> list[np.ndarray]:
        faces = face_detector(image, upsample)
        return [np.array([[p.x, p.y] for p in predictor(image, box).parts()], dtype=np.float64) for box in faces]

    return detect


def loose_square(landmarks: np.ndarray, fill: float = CROP_FILL) -> tuple[float, float, float]:
    """Square crop (left, top, side) in pixels, centred on the landmarks' box, which covers ``fill`` of it."""
    low, high = landmarks.min(axis=0), landmarks.max(axis=0)
    side = float((high - low).max() / fill)
    centre = (low + high) / 2
    return float(centre[0] - side / 2), float(centre[1] - side / 2), side


def crop_face(image: np.ndarray, landmarks: np.ndarray, size: int,
              fill: float = CROP_FILL) -> tuple[np.ndarray, np.ndarray]:
    """Loose square crop resized to ``size``; parts outside the photo are black.

    Args:
        image: ``H x W x 3`` uint8.
        landmarks: ``68 x 2`` pixel (x, y), pixel-corner convention (camera.py).
    Returns:
        ``size x size x 3`` uint8 crop and its ``68 x 2`` landmarks in crop pixels.
    """
    from PIL import Image

    left, top, side = loose_square(landmarks, fill)
    # PIL's crop pads with black outside the photo; the box is in pixel-corner coordinates.
    box = (left, top, left + side, top + side)
    crop = Image.fromarray(image).transform((size, size), Image.Transform.EXTENT, box, Image.Resampling.BILINEAR)
    return np.asarray(crop), (landmarks - [left, top]) * (size / side)


def build_from_photos(source: str | Path, out: str | Path, size: int = 224, detector: Detector | None = None,
                      progress: bool = True) -> BuildReport:
    """Detect, crop and write every photo of ``source/<identity>/`` into the dataset folder ``out``."""
    from PIL import Image, UnidentifiedImageError

    source, out = Path(source), Path(out)
    if not source.is_dir():
        raise DatasetFormatError(f"{source}: not a folder (expected one sub-folder of photos per identity)")
    folders = sorted(p for p in source.iterdir() if p.is_dir())
    photos = [(f, p) for f in folders for p in sorted(f.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    if not photos:
        raise DatasetFormatError(f"{source}: no photos found ({', '.join(sorted(IMAGE_SUFFIXES))}) in "
                                 f"{len(folders)} sub-folder(s); expected {source}/<identity>/<photo>")
    detector = detector if detector is not None else dlib_detector()
    report, rows = BuildReport(), []
    for folder, path in tqdm(photos, desc="photos", disable=not progress, mininterval=1.0):
        try:
            with Image.open(path) as handle:
                image = np.asarray(handle.convert("RGB"))
        except (UnidentifiedImageError, OSError) as error:
            report.skipped.append((str(path), f"cannot read the image ({error})"))
            continue
        faces = [np.asarray(f, dtype=np.float64) for f in detector(image)]
        faces = [f for f in faces if f.shape == (68, 2) and np.isfinite(f).all()]
        if not faces:
            report.skipped.append((str(path), "no face with 68 landmarks found"))
            continue
        if len(faces) > 1:
            report.several_faces.append(str(path))
        largest = max(faces, key=lambda f: np.ptp(f, axis=0).prod())
        crop, landmarks = crop_face(image, largest, size)
        name = f"images/{folder.name}/{path.stem}.png"
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(crop).save(out / name)
        inside = ((landmarks >= 0) & (landmarks <= size)).all(axis=1)
        rows.append((folder.name, name, landmarks, inside.astype(np.float32)))
    if not rows:
        raise DatasetFormatError(f"{source}: no usable photo\n" + report.summary())
    names = sorted({r[0] for r in rows})
    counts = {n: sum(r[0] == n for r in rows) for n in names}
    report.single_image_identities = [n for n in names if counts[n] == 1]
    report.written = len(rows)
    description = json.dumps({"generator": "ringnet_lib.data.photos", "source": str(source), "size": size,
                              "crop_fill": CROP_FILL, "skipped": report.skipped})
    write_metadata(out, [r[1] for r in rows], np.array([names.index(r[0]) for r in rows]), names,
                   np.stack([r[2] for r in rows]), np.stack([r[3] for r in rows]), description=description)
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="folder with one sub-folder of photos per identity")
    parser.add_argument("out", help="dataset folder to write")
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args(argv)
    print(build_from_photos(args.source, args.out, args.size).summary())


if __name__ == "__main__":
    main()
