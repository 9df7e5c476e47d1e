"""Inference on one photo: crop, encoder, FLAME, overlay, meshes and parameters on disk.

    python -m ringnet_lib.demo IMAGE --checkpoint CKPT --out DIR [--detector auto|dlib|none]

    from ringnet_lib.demo import run_demo
    result = run_demo("data_samples/astronaut/images/astronaut/astronaut.png", "runs/quick/checkpoint.pt", "demo_out")

Outputs, like the official RingNet demo's (``<stem>`` is the image's file name without suffix):

    <stem>_crop.png                  the square crop the encoder saw (at the checkpoint's image size)
    <stem>_overlay.png               crop | predicted mesh over the crop | neutral mesh, front view
    <stem>_posed.obj / .ply          the mesh with the predicted pose and expression (FLAME space, metres)
    <stem>_neutral.obj / .ply        the same identity with ψ = 0, pose = 0 (what NoW evaluates)
    <stem>_params.npz / .json        camera 3, pose 6, shape 100, expression 50, and the crop box

Cropping: with the optional detector extra (``pip install dlib-bin face-recognition-models``,
see :mod:`ringnet_lib.data.photos`) the crop is a loose square around the 68 detected
landmarks, exactly as the photo dataset tool crops its training images. Without it
(``--detector auto`` and dlib missing, or ``--detector none``) the crop is the largest
centred square, and :attr:`DemoResult.message` says so: put the face in the middle.

A model trained on the synthetic renders of the default head does not transfer to real
photos; the demo still runs end to end on them (that is what it is for), but the shape
it predicts for a real face means little until the encoder is trained on real photos.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import torch

from .camera import normalized_to_pixels, project_weak_perspective
from .params import full_pose_from_ringnet_pose, split_params


DISPLAY_SIZE = 256  # side of the crop the overlay is drawn on


class DemoError(ValueError):
    """Bad input for the demo (not an image, no face, an unusable checkpoint); the message says what to do."""


class Crop(NamedTuple):
    image: np.ndarray  # S x S x 3 uint8
    box: tuple  # (left, top, side) in pixels of the original photo
    message: str  # how the crop was chosen


class Prediction(NamedTuple):
    params: torch.Tensor  # 159
    posed_vertices: torch.Tensor  # V x 3, predicted ψ and pose
    neutral_vertices: torch.Tensor  # V x 3, ψ = 0, pose = 0


@dataclasses.dataclass
class DemoResult:
    prediction: Prediction
    crop: Crop
    paths: dict  # name -> Path
    seconds: float

    @property
    def message(self) -> str:
        return self.crop.message


# ---------------------------------------------------------------------------
# Input


def load_image(path: str | Path) -> np.ndarray:
    """An image file -> ``H x W x 3`` uint8 RGB; anything else is a :class:`DemoError`."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise DemoError(f"{path}: no such file")
    try:
        with Image.open(path) as handle:
            return np.asarray(handle.convert("RGB"))
    except (UnidentifiedImageError, OSError) as error:
        raise DemoError(f"{path}: not an image that PIL can read ({error}); give a .jpg or .png photo") from error


def centred_square(height: int, width: int) -> tuple[float, float, float]:
    """The largest centred square (left, top, side) of an ``height x width`` image."""
    side = float(min(height, width))
    return (width - side) / 2, (height - side) / 2, side


def resize_box(image: np.ndarray, box: tuple, size: int) -> np.ndarray:
    """Cut ``box`` = (left, top, side) out of ``H x W x 3`` uint8 and resize to ``size x size x 3``;
    outside the photo is black (PIL's EXTENT transform, pixel-corner coordinates as in camera.py)."""
    from PIL import Image

    left, top, side = box
    extent = (left, top, left + side, top + side)
    return np.asarray(Image.fromarray(image).transform((size, size), Image.Transform.EXTENT, extent,
                                                       Image.Resampling.BILINEAR))


def face_crop(image: np.ndarray, size: int, detector: str | Callable = "auto") -> Crop:
    """A loose square face crop of ``H x W x 3`` uint8, resized to ``size``.

    Args:
        image: the photo.
        size: side of the crop in pixels (the encoder's input size).
        detector: ``"auto"`` (dlib if installed, else centred), ``"dlib"`` (required), ``"none"``
            (centred), or a callable ``image -> list of 68 x 2 pixel arrays`` (one per face).
    Returns:
        :class:`Crop`. A detector that finds no face raises :class:`DemoError`.
    """
    from .data.photos import dlib_detector, loose_square

    if detector in ("auto", "dlib"):
        try:
            detect = dlib_detector()
        except ImportError as error:
            if detector == "dlib":
                raise DemoError(str(error)) from error
            detect = None
            reason = ("no face detector installed (optional extra: pip install dlib-bin face-recognition-models); "
                      "using a centred square crop, so the face should fill the middle of the photo")
    elif detector == "none":
        detect, reason = None, "detector='none': using a centred square crop"
    elif callable(detector):
        detect = detector
    else:
        raise DemoError(f"detector must be 'auto', 'dlib', 'none' or a function, got {detector!r}")

    if detect is None:
        box = centred_square(*image.shape[:2])
        return Crop(resize_box(image, box, size), box, reason)
    faces = [np.asarray(f, dtype=np.float64) for f in detect(image)]
    faces = [f for f in faces if f.shape == (68, 2) and np.isfinite(f).all()]
    if not faces:
        raise DemoError("the face detector found no face in the image; try a photo with a clear, roughly "
                        "frontal face, or --detector none with the face centred")
    largest = max(faces, key=lambda f: np.ptp(f, axis=0).prod())  # the photo tool's choice too
    box = loose_square(largest)
    note = f" ({len(faces)} faces found; kept the largest)" if len(faces) > 1 else ""
    return Crop(resize_box(image, box, size), box, "loose crop around the detected landmarks" + note)


# ---------------------------------------------------------------------------
# Model


def load_model(checkpoint: str | Path, expected: dict | None = None, flame=None):
    """Rebuild the encoder a training checkpoint was made with, and its FLAME.

    Args:
        checkpoint: a ``checkpoint.pt`` written by :func:`ringnet_lib.train.train`.
        expected: optional config fields (e.g. ``{"trunk": "resnet50"}``) the checkpoint must have.
        flame: the checkpoint's decoder if already loaded (saves loading it again).
    Returns:
        ``(encoder in eval mode, TrainConfig, FLAME)``. Anything that does not fit raises :class:`DemoError`.
    """
    from .flame import FLAME
    from .train import TrainConfig, build_encoder
    from .training.checkpoint import CheckpointError, load_checkpoint, strip_wrappers
    from .training.step import LandmarkHead

    try:
        saved = load_checkpoint(checkpoint)  # weights_only: a hostile file is refused before it runs
    except CheckpointError as error:
        raise DemoError(str(error)) from None
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(saved["config"]) - fields)
    if unknown:
        raise DemoError(f"{checkpoint}: the checkpoint comes from another config version (unknown fields "
                        f"{unknown}); retrain it with this version of ringnet_lib.train")
    config = TrainConfig(**saved["config"])
    different = {k: (getattr(config, k), v) for k, v in (expected or {}).items() if getattr(config, k) != v}
    if different:
        detail = ", ".join(f"{k}: checkpoint {a!r} vs expected {b!r}" for k, (a, b) in sorted(different.items()))
        raise DemoError(f"{checkpoint}: the checkpoint comes from another config ({detail})")
    flame = FLAME(config.flame_model or None) if flame is None else flame
    head = LandmarkHead(flame, use_68=config.landmarks68)
    # The camera the encoder starts from is a buffer in the state dict, so any value works here.
    encoder = build_encoder(config, flame, head, torch.zeros(3))
    try:
        encoder.load_state_dict(strip_wrappers(saved["model"]))
    except RuntimeError as error:
        first = str(error).splitlines()[0:3]
        raise DemoError(f"{checkpoint}: the weights do not fit the encoder its config describes (trunk "
                        f"{config.trunk!r}, {config.n_iterations} iterations): the checkpoint comes from another "
                        f"config or was edited. {' '.join(first)}") from error
    return encoder.eval(), config, flame


@torch.no_grad()
def predict(encoder, flame, crop: np.ndarray) -> Prediction:
    """Encoder + FLAME on one ``S x S x 3`` uint8 crop -> :class:`Prediction`."""
    image = torch.from_numpy(np.array(crop, dtype=np.uint8)).permute(2, 0, 1).float()[None] / 255.0  # 1 x 3 x S x S
    params = encoder(image).params  # 1 x 159
    camera, pose, shape, expression = split_params(params)
    posed = flame(shape=shape, expression=expression, pose=full_pose_from_ringnet_pose(pose)).vertices
    neutral = flame(shape=shape).vertices  # ψ = 0, pose = 0: the identity alone
    return Prediction(params[0], posed[0], neutral[0])


def mesh_pixels(vertices: torch.Tensor, params: torch.Tensor, size: int) -> torch.Tensor:
    """``V x 3`` posed vertices through the predicted camera (``params`` 159) to pixels of a
    ``size`` crop of the same box: ``V x 2`` (u right, v down)."""
    camera = split_params(params[None]).camera  # 1 x 3
    return normalized_to_pixels(project_weak_perspective(vertices[None], camera), size)[0]


# ---------------------------------------------------------------------------
# Output


def draw_mesh_2d(ax, pixels: np.ndarray, vertices: np.ndarray, faces: np.ndarray, alpha: float = 0.6,
                 color=(0.55, 0.75, 1.0)) -> None:
    """Paint the mesh over an image: ``pixels`` V x 2 (u, v down), ``vertices`` V x 3 (for depth and
    shading), ``faces`` F x 3. Back faces culled, the rest painted far to near (painter's algorithm)."""
    from matplotlib.collections import PolyCollection

    triangles = vertices[faces]
    normals = np.cross(triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0])
    normals /= np.linalg.norm(normals, axis=1, keepdims=True) + 1e-20
    keep = normals[:, 2] > 0  # the camera looks along -z: faces towards +z are visible
    order = np.argsort(triangles[keep, :, 2].mean(1))  # far (small z) first
    shade = 0.3 + 0.7 * normals[keep][order, 2:3]
    rgb = np.clip(np.asarray(color)[None] * shade, 0, 1)
    ax.add_collection(PolyCollection(pixels[faces[keep][order]], facecolors=rgb, edgecolors="none", alpha=alpha))


def overlay_figure(crop: np.ndarray, prediction: Prediction, faces: torch.Tensor, title: str = ""):
    """Three panels: the crop, the posed mesh over it, the neutral mesh from the front. Returns the Figure.

    ``crop``: ``S x S x 3`` uint8, the encoder's crop or a sharper crop of the same box (any S).
    """
    import textwrap

    import matplotlib.pyplot as plt

    from .viz import plot_mesh

    size = crop.shape[0]
    faces_np = faces.cpu().numpy()
    pixels = mesh_pixels(prediction.posed_vertices, prediction.params, size).numpy()
    figure, axes = plt.subplots(1, 3, figsize=(10.5, 4.0))
    axes[0].imshow(crop)
    axes[0].set_title("input crop")
    axes[1].imshow(crop)
    draw_mesh_2d(axes[1], pixels, prediction.posed_vertices.numpy(), faces_np)
    axes[1].set_title("predicted mesh (posed)")
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


def params_dict(params: torch.Tensor, crop: Crop) -> dict:
    """159 values -> named blocks (numpy), plus the crop box and size, for .npz/.json."""
    camera, pose, shape, expression = (block.numpy().astype(np.float32) for block in split_params(params))
    return {"camera": camera, "pose": pose, "shape": shape, "expression": expression,
            "params": params.numpy().astype(np.float32), "crop_box": np.asarray(crop.box, dtype=np.float32),
            "crop_size": np.asarray(crop.image.shape[0])}


def write_outputs(out_dir: str | Path, stem: str, crop: Crop, prediction: Prediction, faces: torch.Tensor,
                  title: str = "", display: np.ndarray | None = None) -> dict:
    """Write the PNGs, OBJ/PLY meshes and parameters; returns ``{name: Path}``.

    ``display``: a sharper crop of the same box for the overlay (default: the encoder's crop).
    """
    import matplotlib.pyplot as plt
    import trimesh
    from PIL import Image

    from .evaluation.export import write_obj

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"crop": out / f"{stem}_crop.png", "overlay": out / f"{stem}_overlay.png",
             "params_npz": out / f"{stem}_params.npz", "params_json": out / f"{stem}_params.json"}
    Image.fromarray(crop.image).save(paths["crop"])
    figure = overlay_figure(crop.image if display is None else display, prediction, faces, title)
    figure.savefig(paths["overlay"], dpi=100)
    plt.close(figure)
    for name, vertices in (("posed", prediction.posed_vertices), ("neutral", prediction.neutral_vertices)):
        paths[f"{name}_obj"] = write_obj(out / f"{stem}_{name}.obj", vertices, faces)
        paths[f"{name}_ply"] = out / f"{stem}_{name}.ply"
        # process=False keeps FLAME's vertex order, so vertex i is FLAME vertex i in every file.
        trimesh.Trimesh(vertices.numpy(), faces.cpu().numpy(), process=False).export(paths[f"{name}_ply"])
    values = params_dict(prediction.params, crop)
    np.savez(paths["params_npz"], **values)
    paths["params_json"].write_text(json.dumps({k: v.tolist() for k, v in values.items()}, indent=1))
    return paths


def run_demo(image_path: str | Path, checkpoint: str | Path, out_dir: str | Path,
             detector: str | Callable = "auto") -> DemoResult:
    """The whole demo: image -> crop -> encoder -> FLAME -> files in ``out_dir``."""
    started = time.perf_counter()
    image = load_image(image_path)
    encoder, config, flame = load_model(checkpoint)
    crop = face_crop(image, config.image_size, detector)
    prediction = predict(encoder, flame, crop.image)
    title = f"{Path(image_path).name}: {crop.message}"
    # The encoder may see 64 px; the overlay is drawn on a 256 px crop of the same box.
    display = resize_box(image, crop.box, max(DISPLAY_SIZE, crop.image.shape[0]))
    paths = write_outputs(out_dir, Path(image_path).stem, crop, prediction, flame.faces, title, display)
    return DemoResult(prediction, crop, paths, time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ringnet_lib.demo", description=__doc__.split("\n")[0])
    parser.add_argument("image", help="a photo (.jpg, .png)")
    parser.add_argument("--checkpoint", required=True, help="checkpoint.pt written by python -m ringnet_lib.train")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--detector", default="auto", choices=["auto", "dlib", "none"])
    args = parser.parse_args(argv)
    try:
        result = run_demo(args.image, args.checkpoint, args.out, args.detector)
    except DemoError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"crop: {result.message}")
    for name, path in result.paths.items():
        print(f"  {name:>12}: {path}")
    print(f"done in {result.seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
