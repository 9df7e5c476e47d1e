"""Can the training loop's data path keep a ResNet-50 step fed? Measured on exactly that path.

    python bench/data_loading.py                           # a folder dataset at 224 and 128 px, 2 workers
    python bench/data_loading.py --sizes 128 --workers 2 --batches 20
    python bench/data_loading.py --data render             # rings rendered on the fly (the presets)

For each image size, in the same run:

1. the data: a small synthetic dataset written to a temporary folder (or ``--data DIR``), or
   ``--data render`` for the on-the-fly renders;
2. loader: images/s delivered by the loop's own path, ``training.data.make_rings`` ->
   ``make_loader`` (the DataLoader with ``--workers`` processes and the one ring batch sampler; rendered
   rings on the CPU are rendered in those workers)
   -> ``prepare_batch`` (to the device, rendering there for ``render`` on a GPU or without workers),
   after one warm-up batch;
3. step: images/s one ResNet-50 training step (forward, backward, SGD) consumes on the same device;

and prints both with their ratio (the loader should deliver at least twice what the step consumes).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torchvision

from ringnet_lib.data.synthesize import SynthConfig, Synthesizer, synthesize_dataset
from ringnet_lib.decoder import Decoder
from ringnet_lib.training.config import TrainConfig
from ringnet_lib.training.data import make_loader, make_rings, prepare_batch


def loader_rate(config: TrainConfig, decoder: Decoder, batches: int) -> float:
    """Images/s delivered by the training loop's data path over ``batches`` batches (after one warm-up batch)."""
    rings = make_rings(config)
    loader = make_loader(config, rings, total_steps=batches + 1, decoder=decoder)
    device = torch.device(config.device)
    iterator = iter(loader)
    prepare_batch(next(iterator), rings, decoder, device)  # workers started, first batch through
    delivered, start = 0, time.perf_counter()
    for batch in iterator:
        batch = prepare_batch(batch, rings, decoder, device)
        delivered += batch["images"].shape[0] * batch["images"].shape[1]
    if device.type == "cuda":
        torch.cuda.synchronize()
    return delivered / (time.perf_counter() - start)


def step_rate(size: int, n_images: int, steps: int, device: str) -> float:
    """Images/s of ResNet-50 forward + backward + SGD step on ``n_images`` images of side ``size``."""
    model = torchvision.models.resnet50(weights=None).to(device)
    optimiser = torch.optim.SGD(model.parameters(), lr=1e-3)
    images = torch.rand(n_images, 3, size, size, device=device)

    def step() -> None:
        optimiser.zero_grad()
        model(images).square().mean().backward()
        optimiser.step()

    step()  # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return steps * n_images / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 128])
    parser.add_argument("--ring-size", type=int, default=6)
    parser.add_argument("--rings-per-batch", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batches", type=int, default=16, help="loader batches timed")
    parser.add_argument("--steps", type=int, default=3, help="training steps timed")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data", default=None, help="a dataset folder, or 'render' (default: synthesise a folder)")
    args = parser.parse_args()
    n_images = args.ring_size * args.rings_per_batch
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}; ring batch = "
          f"{args.rings_per_batch} x {args.ring_size} images; loader workers = {args.workers}")
    decoder = Decoder().to(args.device)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        synthesizer = None
        for size in args.sizes:
            data = args.data
            if data is None:
                data = str(Path(scratch) / f"synthetic_{size}")
                synth_config = SynthConfig(identities=8, per_identity=12, size=size, seed=0)
                synthesizer = synthesizer or Synthesizer(synth_config)
                synthesizer.config = synth_config
                synthesize_dataset(synth_config, data, synthesizer=synthesizer, progress=False)
            extra = {"flip_probability": 0.5} if data != "render" else {"n_identities": 200, "images_per_identity": 6}
            config = TrainConfig.from_preset("quick", data=data, image_size=size, ring_size=args.ring_size,
                                             batch_size=args.rings_per_batch, workers=args.workers,
                                             device=args.device, **extra)
            loader = loader_rate(config, decoder, args.batches)
            step = step_rate(size, n_images, args.steps, args.device)
            rows.append((size, loader, step))
            print(f"{size:4d} px: loader {loader:8.1f} images/s | ResNet-50 train step {step:6.1f} images/s | "
                  f"ratio {loader / step:6.1f} x (target >= 2)", flush=True)
    if all(loader >= 2 * step for _, loader, step in rows):
        print("OK: the loader delivers at least twice what the step consumes at every size")
    else:
        print("WARNING: the loader is below twice the step's consumption at some size")


if __name__ == "__main__":
    main()
