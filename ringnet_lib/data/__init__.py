"""Data: synthetic faces with ground truth, the dataset format, real photos, rings and their loader.

See docs/dataset_format.md. The modules, in the order data flows:

* :mod:`.render` - software rasteriser (weak-perspective camera of ``camera.py``);
* :mod:`.appearance` - random skin, features, light and backgrounds;
* :mod:`.synthetic` - rings rendered on the fly (the quick and paper presets);
* :mod:`.synthesize` - the textured generator to a dataset folder (``python -m ringnet_lib.data.synthesize``);
* :mod:`.images` - reading any photo (bit depths, alpha) safely;
* :mod:`.photos` - face detection, crops, photo folders to datasets (``python -m ringnet_lib.data.photos``);
* :mod:`.dataset` - the on-disk format and :class:`FaceDataset`;
* :mod:`.augment` - flips that keep landmarks consistent;
* :mod:`.rings` - rings from identities (:class:`RingBuilder`, :class:`FolderRingSet`);
* :mod:`.sampler` - the batch sampler, collate and DataLoader training uses;
* :mod:`.samples` - the small datasets shipped in the package.
"""
from .augment import IBUG68_FLIP, flip_landmarks, flip_sample
from .dataset import DatasetFormatError, FaceDataset, read_metadata, write_metadata
from .images import ImageError, read_image
from .rings import FolderRingSet, RingBuilder, RingError
from .sampler import RingBatchSampler, collate_rings, ring_loader
from .synthetic import SyntheticRingSet, render_grey_heads

__all__ = ["IBUG68_FLIP", "flip_landmarks", "flip_sample", "DatasetFormatError", "FaceDataset", "read_metadata",
           "write_metadata", "ImageError", "read_image", "FolderRingSet", "RingBuilder", "RingError",
           "RingBatchSampler", "collate_rings", "ring_loader", "SyntheticRingSet", "render_grey_heads"]
