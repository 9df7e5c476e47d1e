"""ringnet_lib: RingNet (Sanyal et al., CVPR 2019) rebuilt in PyTorch, for teaching.

The public API, in the order data flows (docs/architecture.md)::

    images -> RingNetEncoder -> params (N x 159) -> Decoder -> vertices, landmarks -> losses -> train

    import ringnet_lib as rn
    decoder = rn.Decoder()                                   # FLAME + 68 landmarks + camera
    out = decoder(params)                                    # out.landmarks2d: N x 68 x 2
    result = rn.train(rn.TrainConfig.from_preset("quick"))   # the training loop

Names are loaded on first use (``rn.Decoder`` imports :mod:`ringnet_lib.decoder`), so
``import ringnet_lib`` stays fast and command-line tools load only what they need.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# module -> the public names it defines (a name equal to the module's own last part is the module itself)
_MODULES = {
    # the model: parameters, FLAME, landmarks, camera, the decoder
    "ringnet_lib.params": ("params", "split_params", "join_params"),
    "ringnet_lib.flame": ("FLAME", "FlameOutput"),
    "ringnet_lib.decoder": ("Decoder", "DecoderOutput"),
    "ringnet_lib.default_head": ("default_model",),
    "ringnet_lib.lbs": ("lbs",),
    "ringnet_lib.landmarks": ("landmarks", "head_rotation", "yaw_degrees"),
    "ringnet_lib.camera": ("camera", "project_weak_perspective", "normalized_to_pixels", "pixels_to_normalized",
                           "camera_looking_at"),
    "ringnet_lib.contour": ("contour",),
    "ringnet_lib.model_io": ("model_io",),
    # learning: the encoder, the losses, fitting
    "ringnet_lib.encoder": ("RingNetEncoder", "normalize_images"),
    "ringnet_lib.losses": ("losses",),
    "ringnet_lib.fitting": ("fit_to_landmarks", "FitConfig"),
    # data
    "ringnet_lib.data.synthetic": ("SyntheticRingSet", "render_grey_heads"),
    "ringnet_lib.data.dataset": ("FaceDataset",),
    "ringnet_lib.data.rings": ("FolderRingSet", "RingBuilder"),
    "ringnet_lib.data.sampler": ("ring_loader", "collate_rings"),
    "ringnet_lib.data.synthesize": ("SynthConfig", "Synthesizer", "synthesize_dataset"),
    "ringnet_lib.data.images": ("read_image",),
    "ringnet_lib.data.photos": ("photos", "dlib_available", "loose_square", "get_detector"),
    "ringnet_lib.data.augment": ("IBUG68_FLIP", "flip_sample", "flip_landmarks"),
    "ringnet_lib.training.data": ("make_rings", "make_loader", "prepare_batch"),
    "ringnet_lib.data.samples": ("samples",),
    # training
    "ringnet_lib.training": ("TrainConfig", "train", "ring_step", "load_encoder", "load_checkpoint",
                             "build_encoder", "build_decoder", "set_train_mode", "changed_fields"),
    # evaluation
    "ringnet_lib.evaluation": ("evaluation", "evaluate_shapes", "now_errors"),
    "ringnet_lib.alignment": ("umeyama",),
    "ringnet_lib.evaluation.identifiability": ("landmark_shape_information",),
    "ringnet_lib.evaluation.diagnostics": ("diagnose_encoder", "diagnostics_figure"),
    "ringnet_lib.evaluation.trained": ("benchmark_checkpoint", "benchmark_encoder"),
    # front doors
    "ringnet_lib.demo": ("demo", "run_demo"),
    "ringnet_lib.ablation": ("ablation",),
    "ringnet_lib.face_region": ("face_region",),
    "ringnet_lib.viz": ("plot_mesh", "render_views", "draw_mesh_2d"),
    "ringnet_lib.interactive": ("flame_explorer", "plotly_mesh"),
    "ringnet_lib.notebook": ("notebook",),
    "ringnet_lib.testing": ("testing",),
}
_API = {name: module for module, names in _MODULES.items() for name in names}

__all__ = sorted(_API)


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'ringnet_lib' has no attribute {name!r}")
    module = importlib.import_module(_API[name])
    value = module if module.__name__.rsplit(".", 1)[-1] == name else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
