"""Is the ring loader fast enough to keep a ResNet-50 training step fed?

    python bench/data_loading.py                  # 224 and 128 px, 2 workers
    python bench/data_loading.py --sizes 128 --workers 2 --batches 20

For each image size, in the same run:

1. writes a small synthetic dataset to a temporary folder (or reads ``--data``);
2. loader: images/s delivered by ``ring_loader`` (from disk, JPEG decode, flips, collate,
   ``--workers`` worker processes), after one warm-up batch;
3. step: images/s consumed by one training step of torchvision's ``resnet50(weights=None)``
   (forward, backward, SGD update) on a ring batch of the same shape;

and prints both with their ratio (target: loader >= 2 x step).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torchvision

from ringnet_lib.data.dataset import FaceDataset
from ringnet_lib.data.sampler import ring_loader
from ringnet_lib.data.synthesize import SynthConfig, Synthesizer, synthesize_dataset


def loader_rate(root: Path, size: int, ring_size: int, rings_per_batch: int, workers: int, batches: int) -> float:
    """Images/s delivered by the ring loader over ``batches`` batches (after one warm-up batch)."""
    dataset = FaceDataset(root, image_size=size, flip_probability=0.5)
    loader = ring_loader(dataset, ring_size, rings_per_batch, seed=0, num_workers=workers)
    delivered, epoch = 0, 0
    iterator = iter(loader)
    next(iterator)  # workers started, first batch in flight
    start = time.perf_counter()
    while delivered < batches * ring_size * rings_per_batch:
        try:
            batch = next(iterator)
        except StopIteration:  # a small dataset: go on with the next epoch
            epoch += 1
            loader.sampler.set_epoch(epoch)
            iterator = iter(loader)
            continue
        delivered += batch["images"].shape[0] * batch["images"].shape[1]
    return delivered / (time.perf_counter() - start)


def step_rate(size: int, n_images: int, steps: int) -> float:
    """Images/s of ResNet-50 forward + backward + SGD step on ``n_images`` images of side ``size``."""
    model = torchvision.models.resnet50(weights=None)
    optimiser = torch.optim.SGD(model.parameters(), lr=1e-3)
    images = torch.rand(n_images, 3, size, size)

    def step() -> None:
        optimiser.zero_grad()
        model(images).square().mean().backward()
        optimiser.step()

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * n_images / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 128])
    parser.add_argument("--ring-size", type=int, default=6)
    parser.add_argument("--rings-per-batch", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batches", type=int, default=16, help="loader batches timed")
    parser.add_argument("--steps", type=int, default=3, help="training steps timed")
    parser.add_argument("--data", type=Path, default=None, help="an existing dataset folder (default: synthesise one)")
    args = parser.parse_args()
    n_images = args.ring_size * args.rings_per_batch
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; ring batch = {args.rings_per_batch} x "
          f"{args.ring_size} images; loader workers = {args.workers}")
    with tempfile.TemporaryDirectory() as scratch:
        synthesizer = None
        rows = []
        for size in args.sizes:
            root = args.data
            if root is None:
                root = Path(scratch) / f"synthetic_{size}"
                config = SynthConfig(identities=8, per_identity=12, size=size, seed=0)
                if synthesizer is None:
                    synthesizer = Synthesizer(config)
                synthesizer.config = config
                synthesize_dataset(config, root, synthesizer=synthesizer, progress=False)
            loader = loader_rate(root, size, args.ring_size, args.rings_per_batch, args.workers, args.batches)
            step = step_rate(size, n_images, args.steps)
            rows.append((size, loader, step))
            print(f"{size:4d} px: loader {loader:8.1f} images/s | ResNet-50 train step {step:6.1f} images/s | "
                  f"ratio {loader / step:6.1f} x (target >= 2)", flush=True)
    if all(loader >= 2 * step for _, loader, step in rows):
        print("OK: the loader delivers at least twice what the step consumes at every size")
    else:
        print("WARNING: the loader is below twice the step's consumption at some size")


if __name__ == "__main__":
    main()
