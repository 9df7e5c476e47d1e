"""Where training gets its rings: the config's data source as a ring dataset, and its loader.

* ``"render"``: :class:`~ringnet_lib.data.synthetic.SyntheticRingSet` (parameters from the
  loader, images rendered on the training device by :func:`prepare_batch`; on the CPU with loader
  workers, rendered in the workers, :class:`RenderInWorkers`);
* ``"synthetic"``: the shipped textured sample (package data, :data:`SYNTHETIC_SAMPLE`);
* anything else: a dataset folder (docs/dataset_format.md) as a
  :class:`~ringnet_lib.data.rings.FolderRingSet`.

Every error about the data (a missing folder, rings larger than the identities allow) is
raised by :func:`make_rings`, before any training.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..data.dataset import FaceDataset
from ..data.rings import FolderRingSet
from ..data.sampler import collate_rings, ring_loader
from ..data.samples import SYNTHETIC_SAMPLE
from ..data.synthetic import SyntheticRingSet
from ..decoder import Decoder
from .config import RENDER, SYNTHETIC, TrainConfig


def make_rings(config: TrainConfig, decoder: Decoder | None = None):
    """The ring dataset ``config.data`` names (errors for a missing folder or too-large rings come here);
    ``decoder``: the run's model, on which the textured style draws its appearance (default: the default head)."""
    if config.data == RENDER:
        return SyntheticRingSet(n_identities=config.n_identities, images_per_identity=config.images_per_identity,
                                ring_size=config.ring_size, image_size=config.image_size, seed=config.data_seed,
                                n_rings=config.n_rings, style=config.style, decoder=decoder)
    path = SYNTHETIC_SAMPLE if config.data == SYNTHETIC else Path(config.data).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"data={config.data!r}: no such folder ({path}). Use 'render', 'synthetic', or the "
                                "path of a dataset folder (docs/dataset_format.md); make one with python -m "
                                "ringnet_lib.data.synthesize or python -m ringnet_lib.data.photos")
    faces = FaceDataset(path, image_size=config.image_size)
    return FolderRingSet(faces, config.ring_size, config.data_seed, config.flip_probability)


class RenderInWorkers:
    """The loader's collate function for rendered rings on the CPU: each worker process renders the batches it
    collates, so that ``workers`` processes render side by side.

    Why: the rasteriser's loops run on one thread (torch's threads spin-wait on a shared machine,
    :mod:`ringnet_lib.data.render`), so one process renders about 130 images/s at 224 px whatever the
    cores; two processes render about 255 on 2 cores (``bench/data_loading.py --data render``). The images
    are the same as :func:`prepare_batch` renders: rendering draws no random numbers.
    """

    def __init__(self, rings: SyntheticRingSet, decoder: Decoder):
        self.rings, self.decoder = rings, decoder

    def __call__(self, items: list[dict]) -> dict:
        with torch.no_grad():
            return self.rings.render(collate_rings(items), self.decoder)


def make_loader(config: TrainConfig, rings, rank: int = 0, world_size: int = 1, start_step: int = 0,
                total_steps: int | None = None, decoder: Decoder | None = None) -> torch.utils.data.DataLoader:
    """The run's DataLoader: ``config.workers`` processes, pinned memory on CUDA, exact from ``start_step``;
    with ``decoder``, rendered rings on the CPU are rendered in the workers (:class:`RenderInWorkers`)."""
    cuda = config.device.startswith("cuda")
    collate = collate_rings
    if isinstance(rings, SyntheticRingSet) and not cuda and config.workers > 0 and decoder is not None:
        collate = RenderInWorkers(rings, decoder)
    return ring_loader(rings, config.batch_size, config.seed, rank, world_size, config.workers, start_step,
                       total_steps, pin_memory=cuda and config.workers > 0, prefetch_factor=4 if cuda else None,
                       collate_fn=collate)


def prepare_batch(batch: dict, rings, decoder: Decoder, device: torch.device, channels_last: bool = False) -> dict:
    """Move a loader batch to ``device``; render it there when the rings are rendered on the fly."""
    batch = {key: value.to(device, non_blocking=True) for key, value in batch.items()}
    if isinstance(rings, SyntheticRingSet) and "images" not in batch:  # not already rendered by a worker
        batch = rings.render(batch, decoder)
    if channels_last:
        images = batch["images"]
        batch["images"] = images.flatten(0, 1).contiguous(memory_format=torch.channels_last).view(images.shape)
    return batch
