"""A 3D face from a photo: crop, then regress (a trained encoder) or fit (no network), then meshes and pictures.

    python -m ringnet_lib.demo PHOTO --method fit                         # any photo, no training (needs dlib)
    python -m ringnet_lib.demo PHOTO --method regress --checkpoint CKPT   # a trained RingNet encoder
    python -m ringnet_lib.demo PHOTOS_FOLDER --method fit --out demo_out  # every photo of a folder, one call

    from ringnet_lib.demo import run_demo
    result = run_demo(ASTRONAUT_PHOTO, out_dir="demo_out", method="fit")

Methods:

* ``regress``: RingNet's way. The checkpoint's encoder maps the crop to the 159 parameters in one
  forward pass. An encoder trained on the synthetic renders of the default head does not
  transfer to real photos: the demo runs end to end, but its shape means little.
* ``fit``: the classic way, and the one that works on any photo today. FLAME's shape, expression,
  pose and camera are fitted to the photo's 68 landmarks with the paper's landmark loss and
  regularisers (:func:`ringnet_lib.fitting.fit_to_landmarks`). Needs the 68 landmarks of dlib
  (the ``photos`` extra: ``pip install dlib-bin face-recognition-models``).

Crops: a loose square around the face (:mod:`ringnet_lib.data.photos`): from dlib's 68 landmarks,
or, without the extra, from the box of scikit-image's LBP face cascade. When no face is found the
photo is refused (exit status 2; in a folder it is skipped and counted), never cropped at a guess.
``--detector none`` takes the largest centred square, on purpose.

Outputs, in ``--out``, named after the photo (``<stem>`` = its file name without suffix):

    <stem>_crop.png                  the square crop the method saw
    <stem>_overlay.png               crop | mesh over the crop (+ landmarks) | neutral mesh, front view
    <stem>_posed.obj / .ply          the mesh with the predicted pose and expression (FLAME space, metres)
    <stem>_neutral.obj / .ply        the same identity with ψ = 0, pose = 0 (what NoW evaluates)
    <stem>_params.npz / .json        camera 3, pose 6, shape 100, expression 50, the crop box, the method
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import textwrap
import time
from pathlib import Path
from typing import Callable, NamedTuple

import matplotlib.pyplot as plt
import numpy as np
import torch
import trimesh
from PIL import Image

from .camera import normalized_to_pixels, pixels_to_normalized
from .checks import missing_folders, remove_if_empty
from .data.images import IMAGE_SUFFIXES, ImageError, read_image
from .data.photos import NoFaceError, crop_face, detect_largest_face, get_detector, resize_box
from .decoder import Decoder
from .evaluation.export import write_obj
from .evaluation.report import check_writable
from .fitting import FitConfig, fit_to_landmarks
from .params import split_params
from .training.checkpoint import CheckpointError, load_encoder
from .viz import draw_mesh_2d, plot_mesh

DISPLAY_SIZE = 256  # side of the crop the overlay is drawn on
# Landmarks (the model's, or their mean distance to the detected ones) farther than this many crop sides are not a
# face prediction but broken weights: refused instead of drawn.
ABSURD_SIDES = 10
FIT_SIZE = 224  # the crop the landmarks are fitted in (the paper's input size)
METHODS = ("regress", "fit")


class DemoError(ValueError):
    """Bad input for the demo (not an image, no face, an unusable checkpoint); the message says what to do."""


class Crop(NamedTuple):
    image: np.ndarray  # S x S x 3 uint8
    box: tuple  # (left, top, side) in pixels of the original photo
    message: str  # how the crop was chosen
    landmarks: np.ndarray | None = None  # 68 x 2 detected landmarks in crop pixels (dlib), if any


class Prediction(NamedTuple):
    params: torch.Tensor  # 159
    posed_vertices: torch.Tensor  # V x 3, predicted ψ and pose
    neutral_vertices: torch.Tensor  # V x 3, ψ = 0, pose = 0
    landmarks2d: torch.Tensor  # 68 x 2 normalised, the model's landmarks in the crop


@dataclasses.dataclass
class DemoResult:
    prediction: Prediction
    crop: Crop
    paths: dict  # name -> Path
    seconds: float
    method: str = "regress"
    residual_px: float | None = None  # mean distance (pixels of the crop) of the model's landmarks to the detected ones

    @property
    def message(self) -> str:
        return self.crop.message


# ---------------------------------------------------------------------------
# Input


def load_image(path: str | Path) -> np.ndarray:
    """An image file -> ``H x W x 3`` uint8 RGB (any bit depth); anything else is a :class:`DemoError`."""
    try:
        return read_image(path)
    except ImageError as error:
        raise DemoError(str(error)) from None


def centred_square(height: int, width: int) -> tuple[float, float, float]:
    """The largest centred square (left, top, side) of an ``height x width`` image."""
    side = float(min(height, width))
    return (width - side) / 2, (height - side) / 2, side


def face_crop(image: np.ndarray, size: int, detector: str | Callable = "auto", source: str = "the photo",
              landmarks: bool = False) -> Crop:
    """A loose square face crop of ``H x W x 3`` uint8, resized to ``size``.

    Args:
        image: the photo.
        size: side of the crop in pixels.
        detector: ``"auto"`` (dlib if installed, else the LBP cascade), ``"dlib"``, ``"cascade"``,
            ``"none"`` (the largest centred square, on purpose), or a callable ``image -> list of Face``.
        source: the photo's name, for messages.
        landmarks: the 68 landmarks are needed (``--method fit``): dlib, or a detector that gives them.
    Returns:
        :class:`Crop`. No face found raises :class:`DemoError`.
    """
    if detector == "none":
        if landmarks:
            raise DemoError(f"{source}: --method fit needs the 68 landmarks of a detector; leave --detector auto")
        box = centred_square(*image.shape[:2])
        return Crop(resize_box(image, box, size), box, "detector 'none': the largest centred square, as asked")
    try:
        detect, name = get_detector(detector, landmarks=landmarks)
        face, note = detect_largest_face(image, detect, source)
    except (ImportError, ValueError) as error:
        raise DemoError(str(error).splitlines()[0]) from None
    if landmarks and face.landmarks is None:
        raise DemoError(f"{source}: the detector gave a face box but no 68 landmarks; --method fit needs dlib "
                        "(pip install dlib-bin face-recognition-models)")
    crop, crop_landmarks, box = crop_face(image, face, size)
    how = "68 landmarks" if face.landmarks is not None else "face box"
    message = f"loose crop around the {how} of {name}" + (f" ({note})" if note else "")
    return Crop(crop, box, message, crop_landmarks)


# ---------------------------------------------------------------------------
# Methods


@torch.no_grad()
def predict(encoder, decoder: Decoder, crop: np.ndarray) -> Prediction:
    """Encoder + decoder on one ``S x S x 3`` uint8 crop -> :class:`Prediction`."""
    image = torch.from_numpy(np.array(crop, dtype=np.uint8)).permute(2, 0, 1).float()[None] / 255.0  # 1 x 3 x S x S
    params = encoder(image).params  # 1 x 159
    return prediction_of(decoder, params)


@torch.no_grad()
def prediction_of(decoder: Decoder, params: torch.Tensor) -> Prediction:
    """The decoded meshes and landmarks of ``1 x 159`` parameters."""
    decoded = decoder(params)
    neutral = decoder.neutral(split_params(params).shape).vertices  # ψ = 0, pose = 0: the identity alone
    return Prediction(params[0], decoded.vertices[0], neutral[0], decoded.landmarks2d[0])


def fit_crop(decoder: Decoder, crop: Crop, config: FitConfig | None = None) -> Prediction:
    """:func:`ringnet_lib.fitting.fit_to_landmarks` on the crop's 68 detected landmarks -> :class:`Prediction`."""
    size = crop.image.shape[0]
    target = pixels_to_normalized(torch.as_tensor(crop.landmarks, dtype=torch.float32), size)[None]
    inside = ((crop.landmarks >= 0) & (crop.landmarks <= size)).all(axis=1)
    result = fit_to_landmarks(decoder, target, torch.as_tensor(inside, dtype=torch.float32)[None], config)
    return prediction_of(decoder, result.params)


def landmark_residual_px(prediction: Prediction, crop: Crop) -> float | None:
    """Mean distance in crop pixels between the model's landmarks and the detected ones (None without them)."""
    if crop.landmarks is None or len(prediction.landmarks2d) != len(crop.landmarks):
        return None
    pixels = normalized_to_pixels(prediction.landmarks2d, crop.image.shape[0]).numpy()
    return float(np.linalg.norm(pixels - crop.landmarks, axis=1).mean())


def check_prediction(prediction: Prediction, size: int, residual: float | None, source: str) -> None:
    """Refuse an absurd prediction before anything is written: parameters or landmarks that are not finite, the
    model's landmarks or their residual beyond :data:`ABSURD_SIDES` sides of the ``size`` px crop."""
    advice = "the checkpoint's weights are broken (diverged or damaged); use another checkpoint or retrain"
    if not (torch.isfinite(prediction.params).all() and torch.isfinite(prediction.landmarks2d).all()):
        raise DemoError(f"{source}: the prediction is not finite (NaN/inf parameters or landmarks); {advice}")
    far = float((normalized_to_pixels(prediction.landmarks2d, size) - size / 2).abs().max())
    if far > ABSURD_SIDES * size:
        raise DemoError(f"{source}: the model's landmarks land {far:.3g} px from the centre of a {size} px crop, "
                        f"more than {ABSURD_SIDES} sides away; {advice}")
    if residual is not None and not (np.isfinite(residual) and residual <= ABSURD_SIDES * size):
        raise DemoError(f"{source}: the landmark residual is {residual:.3g} px at {size} px, more than "
                        f"{ABSURD_SIDES} sides of the crop; {advice}")


def mesh_pixels(vertices: torch.Tensor, params: torch.Tensor, size: int) -> torch.Tensor:
    """``V x 3`` posed vertices through the predicted camera (``params`` 159) to pixels of a
    ``size`` crop of the same box: ``V x 2`` (u right, v down)."""
    camera = split_params(params[None]).camera  # 1 x 3
    return normalized_to_pixels(Decoder.project(vertices[None], camera), size)[0]


# ---------------------------------------------------------------------------
# Output


def overlay_figure(crop: np.ndarray, prediction: Prediction, faces: torch.Tensor, title: str = "",
                   detected: np.ndarray | None = None):
    """Three panels: the crop, the posed mesh (and landmarks) over it, the neutral mesh from the front.

    ``crop``: ``S x S x 3`` uint8, the method's crop or a sharper crop of the same box (any S);
    ``detected``: ``68 x 2`` detected landmarks in pixels of a crop of side ``detected_size`` = the
    method's crop, drawn green next to the model's (red). Returns the Figure.
    """
    size = crop.shape[0]
    faces_np = faces.cpu().numpy()
    pixels = mesh_pixels(prediction.posed_vertices, prediction.params, size).numpy()
    figure, axes = plt.subplots(1, 3, figsize=(10.5, 4.0))
    axes[0].imshow(crop)
    axes[0].set_title("input crop")
    axes[1].imshow(crop)
    draw_mesh_2d(axes[1], pixels, prediction.posed_vertices.numpy(), faces_np)
    model = normalized_to_pixels(prediction.landmarks2d, size).numpy()
    if detected is not None:
        axes[1].scatter(detected[:, 0], detected[:, 1], s=6, c="lime", label="detected")
    axes[1].scatter(model[:, 0], model[:, 1], s=6, c="red", label="model")
    axes[1].legend(loc="lower right", fontsize=7)
    axes[1].set_title("mesh and landmarks (posed)")
    for axis in axes[:2]:
        axis.set_xlim(0, size)
        axis.set_ylim(size, 0)  # image rows go down
        axis.axis("off")
    plot_mesh(axes[2], prediction.neutral_vertices, faces_np, view="front")
    axes[2].set_title("neutral (ψ = 0, pose = 0)")
    if title:
        figure.suptitle(textwrap.fill(title, 140), fontsize=8)
    figure.tight_layout()
    return figure


def params_dict(params: torch.Tensor, crop: Crop, method: str) -> dict:
    """159 values -> named blocks (numpy), plus the crop box and size and the method, for .npz/.json."""
    camera, pose, shape, expression = (block.numpy().astype(np.float32) for block in split_params(params))
    return {"camera": camera, "pose": pose, "shape": shape, "expression": expression,
            "params": params.numpy().astype(np.float32), "crop_box": np.asarray(crop.box, dtype=np.float32),
            "crop_size": np.asarray(crop.image.shape[0]), "method": np.asarray(method)}


def output_paths(out_dir: Path, stem: str) -> dict:
    """Where the outputs of photo ``stem`` go (named after the photo)."""
    names = {"crop": "crop.png", "overlay": "overlay.png", "params_npz": "params.npz", "params_json": "params.json",
             "posed_obj": "posed.obj", "posed_ply": "posed.ply", "neutral_obj": "neutral.obj",
             "neutral_ply": "neutral.ply"}
    return {key: out_dir / f"{stem}_{name}" for key, name in names.items()}


def write_outputs(out_dir: str | Path, stem: str, crop: Crop, prediction: Prediction, faces: torch.Tensor,
                  title: str = "", display: np.ndarray | None = None, method: str = "regress") -> dict:
    """Write the PNGs, OBJ/PLY meshes and parameters; returns ``{name: Path}``.

    ``display``: a sharper crop of the same box for the overlay (default: the method's crop). The folder is made
    here, when there is something to write; if writing fails, the files this call created (and the folders, if
    made here and left empty) are removed: no half set of outputs.
    """
    out = Path(out_dir)
    made = missing_folders(out)
    paths = output_paths(out, stem)
    new = [path for path in paths.values() if not path.exists()]  # a previous run's files are not ours to remove
    try:
        out.mkdir(parents=True, exist_ok=True)
        Image.fromarray(crop.image).save(paths["crop"])
        shown = crop.image if display is None else display
        detected = None if crop.landmarks is None else crop.landmarks * (shown.shape[0] / crop.image.shape[0])
        figure = overlay_figure(shown, prediction, faces, title, detected)
        try:
            figure.savefig(paths["overlay"], dpi=100)
        finally:
            plt.close(figure)
        for name, vertices in (("posed", prediction.posed_vertices), ("neutral", prediction.neutral_vertices)):
            write_obj(paths[f"{name}_obj"], vertices, faces)
            # process=False keeps FLAME's vertex order, so vertex i is FLAME vertex i in every file.
            trimesh.Trimesh(vertices.numpy(), faces.cpu().numpy(), process=False).export(paths[f"{name}_ply"])
        values = params_dict(prediction.params, crop, method)
        np.savez(paths["params_npz"], **values)
        paths["params_json"].write_text(json.dumps({k: v.tolist() for k, v in values.items()}, indent=1))
    except BaseException:
        for path in new:
            path.unlink(missing_ok=True)
        remove_if_empty(made)
        raise
    return paths


# ---------------------------------------------------------------------------
# The whole demo


@dataclasses.dataclass
class Model:
    """What a method needs, loaded once for a folder of photos."""

    method: str
    decoder: Decoder
    encoder: torch.nn.Module | None = None
    image_size: int = FIT_SIZE


def load_method(method: str = "fit", checkpoint: str | Path | None = None,
                flame_model: str | Path | None = None) -> Model:
    """The model a method needs: the checkpoint's encoder and decoder (``regress``), or a decoder (``fit``)."""
    if method not in METHODS:
        raise DemoError(f"--method must be one of {METHODS}, got {method!r}")
    if method == "regress":
        if checkpoint is None:
            raise DemoError("--method regress needs --checkpoint CKPT (a checkpoint.pt written by "
                            "python -m ringnet_lib.train); or use --method fit, which needs no training")
        try:
            encoder, config, decoder = load_encoder(checkpoint, flame_model=flame_model)
        except CheckpointError as error:
            raise DemoError(str(error)) from None
        return Model(method, decoder, encoder, config.image_size)
    try:
        return Model(method, Decoder(flame_model))
    except ValueError as error:
        raise DemoError(str(error).splitlines()[0]) from None


def run_photo(model: Model, image_path: str | Path, out_dir: str | Path, detector: str | Callable = "auto",
              fit_config: FitConfig | None = None) -> DemoResult:
    """One photo through a loaded :class:`Model`: crop, regress or fit, write the outputs."""
    started = time.perf_counter()
    image_path = Path(image_path)
    image = load_image(image_path)
    size = model.image_size if model.method == "regress" else FIT_SIZE
    crop = face_crop(image, size, detector, str(image_path), landmarks=model.method == "fit")
    if model.method == "regress":
        prediction = predict(model.encoder, model.decoder, crop.image)
    else:
        prediction = fit_crop(model.decoder, crop, fit_config)
    residual = landmark_residual_px(prediction, crop)
    check_prediction(prediction, size, residual, str(image_path))
    title = f"{image_path.name} ({model.method}): {crop.message}" + (
        f"; landmark residual {residual:.2f} px at {size} px" if residual is not None else "")
    # The encoder may see 64 px; the overlay is drawn on a 256 px crop of the same box.
    display = resize_box(image, crop.box, max(DISPLAY_SIZE, crop.image.shape[0]))
    paths = write_outputs(out_dir, image_path.stem, crop, prediction, model.decoder.flame.faces, title, display,
                          model.method)
    return DemoResult(prediction, crop, paths, time.perf_counter() - started, model.method, residual)


def run_demo(image_path: str | Path, checkpoint: str | Path | None = None, out_dir: str | Path = "demo_out",
             detector: str | Callable = "auto", method: str = "regress", flame_model: str | Path | None = None,
             fit_config: FitConfig | None = None) -> DemoResult:
    """The whole demo for one photo: load the method's model, then :func:`run_photo`."""
    check_out_dir(out_dir)
    return run_photo(load_method(method, checkpoint, flame_model), image_path, out_dir, detector, fit_config)


def check_out_dir(out_dir: str | Path) -> Path:
    """``--out`` is a folder that can be written, checked by writing before any work; a folder made for the check
    is removed again, and made for good only when a photo's outputs are written (a refused run leaves nothing)."""
    try:
        return check_writable(out_dir, "--out")
    except ValueError as error:
        raise DemoError(str(error)) from None


def photos_in(path: Path) -> list[Path]:
    """The photo itself, or the photos of a folder (sorted, one level deep); a clear error when there are none."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DemoError(f"{path}: no such file or folder")
    photos = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not photos:
        raise DemoError(f"{path}: no photos in this folder ({', '.join(IMAGE_SUFFIXES)})")
    return photos


EXAMPLES = """examples:
  python -m ringnet_lib.demo photo.jpg --method fit
      FLAME fitted to the photo's 68 landmarks (needs: pip install dlib-bin face-recognition-models)
  python -m ringnet_lib.demo photo.jpg --method regress --checkpoint outputs/quick/checkpoint.pt
      a trained encoder's prediction (crop from dlib, or from the LBP cascade without the extra)
  python -m ringnet_lib.demo my_photos/ --method fit --out my_faces
      every photo of a folder in one call; outputs are named after each photo
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ringnet_lib.demo", description=__doc__.split("\n")[0],
                                     epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("photo", help="a photo (.jpg, .png, ...) or a folder of photos")
    parser.add_argument("--method", choices=METHODS, default="fit",
                        help="fit: FLAME to the photo's landmarks (no training); regress: a trained encoder")
    parser.add_argument("--checkpoint", help="checkpoint.pt written by python -m ringnet_lib.train (regress)")
    parser.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    parser.add_argument("--detector", default="auto", choices=["auto", "dlib", "cascade", "none"],
                        help="auto: dlib if installed, else the LBP cascade; none: the centred square")
    parser.add_argument("--flame-model", help="a folder of FLAME files, instead of the checkpoint's or the default")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        photos = photos_in(Path(args.photo))
        check_out_dir(args.out)
        model = load_method(args.method, args.checkpoint, args.flame_model)
    except DemoError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    done, skipped = 0, []
    for photo in photos:
        try:
            result = run_photo(model, photo, args.out, args.detector)
        except (DemoError, NoFaceError) as error:
            if len(photos) == 1:
                print(f"error: {error}", file=sys.stderr)
                return 2
            skipped.append(str(error))
            continue
        done += 1
        residual = f"; landmark residual {result.residual_px:.2f} px" if result.residual_px is not None else ""
        print(f"{photo.name}: {result.message}{residual}; {result.paths['overlay']} and "
              f"{len(result.paths) - 1} more files ({result.seconds:.1f} s)")
    for reason in skipped:
        print(f"skipped {reason}", file=sys.stderr)
    print(f"{done} of {len(photos)} photo(s) done in {time.perf_counter() - started:.1f} s; outputs in {args.out}")
    return 0 if done else 2


if __name__ == "__main__":
    sys.exit(main())
