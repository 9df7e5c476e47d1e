"""Data: synthetic faces with ground truth, the dataset format, real photos, the ring sampler.

See docs/dataset_format.md. The modules:

* :mod:`.render` - software rasteriser (weak-perspective camera of ``camera.py``);
* :mod:`.appearance` - random skin, features, light and backgrounds;
* :mod:`.synthesize` - the synthetic generator (``python -m ringnet_lib.data.synthesize``);
* :mod:`.dataset` - the on-disk format and :class:`FaceDataset`;
* :mod:`.photos` - photo folders to datasets (``python -m ringnet_lib.data.photos``);
* :mod:`.sampler` - :class:`RingSampler`, :func:`ring_loader`;
* :mod:`.augment` - flips that keep landmarks consistent.
"""
from .augment import IBUG68_FLIP, flip_landmarks, flip_sample
from .dataset import DatasetFormatError, FaceDataset, read_metadata, write_metadata
from .sampler import RingSampler, collate_rings, ring_loader

__all__ = ["IBUG68_FLIP", "flip_landmarks", "flip_sample", "DatasetFormatError", "FaceDataset", "read_metadata",
           "write_metadata", "RingSampler", "collate_rings", "ring_loader"]
