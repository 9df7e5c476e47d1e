"""RingNet's full training step against a plain ResNet-50 training step, same images, one run.

    python bench/train_step.py [--sizes 224 128] [--rings 1] [--ring-size 6] [--repeats 7] [--threads N]
    python bench/train_step.py --device cuda --sizes 224 --rings 8        # bf16 autocast, channels_last

RingNet step: B rings of R images -> ONE encoder call (ResNet-50 + 3 regressor iterations) -> ONE
decoder call (FLAME, 68 landmarks, weak perspective) -> ring loss, landmark loss, regularisers ->
backward -> Adam step (:func:`ringnet_lib.training.ring_step`). Baseline: torchvision's ResNet-50
(its classifier replaced by a linear layer to 159 values) -> mean squared output -> backward ->
Adam step, on the same B·R images, with the same autocast and memory format. Both in training mode.

The two are interleaved (A, B, A, B, ...) so that the drifts of a shared machine hit both alike;
the median of each is reported with the ratio RingNet / baseline (target: <= 1.05 on CPU at 224
and 128 px; on a GPU the 6-branch step should reach >= 80 % of the plain step's images/s).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torchvision

from ringnet_lib.decoder import Decoder
from ringnet_lib.encoder import RingNetEncoder
from ringnet_lib.losses import default_ring_identity
from ringnet_lib.params import N_PARAMS
from ringnet_lib.training.step import ring_step


def make_batch(n_rings: int, ring: int, size: int, device, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    batch = {"images": torch.rand(n_rings, ring, 3, size, size, generator=generator),
             "landmarks": 0.5 * (2 * torch.rand(n_rings, ring, 68, 2, generator=generator) - 1),
             "confidence": torch.ones(n_rings, ring, 68), "identity": default_ring_identity(n_rings, ring)}
    return {key: value.to(device) for key, value in batch.items()}


def compare_steps(sizes=(224, 128), rings: int = 1, ring_size: int = 6, repeats: int = 7, warmup: int = 2,
                  device: str = "cpu", amp: bool = True, channels_last: bool = True, trunk: str = "resnet50",
                  log=print) -> list[dict]:
    """Median RingNet and baseline step times per image size; on CUDA with bf16 autocast and channels_last."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    amp_dtype = torch.bfloat16 if cuda and amp else None
    memory_format = torch.channels_last if cuda and channels_last else torch.contiguous_format
    torch.manual_seed(0)
    decoder = Decoder().to(device)
    ringnet = RingNetEncoder(trunk, initial_params=decoder.initial_params()).to(device, memory_format=memory_format)
    baseline = getattr(torchvision.models, trunk)(weights=None)
    baseline.fc = torch.nn.Linear(baseline.fc.in_features, N_PARAMS)
    baseline = baseline.to(device, memory_format=memory_format)
    ringnet.train(), baseline.train()
    ringnet_optimizer = torch.optim.Adam(ringnet.parameters(), lr=1e-4)
    baseline_optimizer = torch.optim.Adam(baseline.parameters(), lr=1e-4)
    count = lambda model: sum(p.numel() for p in model.parameters()) / 1e6
    log(f"torch {torch.__version__}, {device}, {torch.get_num_threads()} threads, autocast {amp_dtype}, "
        f"{memory_format}; {rings} ring(s) x R={ring_size} = {rings * ring_size} images; RingNet encoder "
        f"{count(ringnet):.1f} M parameters, baseline {count(baseline):.1f} M; landmarks: {decoder.n_landmarks}")

    def ringnet_step(batch):
        prediction = ring_step(ringnet, decoder, batch, amp_dtype=amp_dtype)
        ringnet_optimizer.zero_grad(set_to_none=True)
        prediction.total.backward()
        ringnet_optimizer.step()

    def baseline_step(batch):
        with torch.autocast(device.type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
            output = baseline(batch["images"].flatten(0, 1)).float()
        baseline_optimizer.zero_grad(set_to_none=True)
        output.pow(2).mean().backward()
        baseline_optimizer.step()

    def timed(step, batch) -> float:
        if cuda:
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        step(batch)
        if cuda:
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    rows = []
    log(f"{'size':>5} {'RingNet ms':>11} {'ResNet ms':>10} {'ratio':>7} {'RingNet img/s':>14} {'ResNet img/s':>13}")
    for size in sizes:
        batch = make_batch(rings, ring_size, size, device)
        images = batch["images"]
        batch["images"] = images.flatten(0, 1).contiguous(memory_format=memory_format).view(images.shape)
        for _ in range(warmup):
            ringnet_step(batch)
            baseline_step(batch)
        times = {"ringnet": [], "baseline": []}
        for _ in range(repeats):
            times["ringnet"].append(timed(ringnet_step, batch))
            times["baseline"].append(timed(baseline_step, batch))
        ours, theirs = statistics.median(times["ringnet"]), statistics.median(times["baseline"])
        n = rings * ring_size
        rows.append({"size": size, "ringnet_ms": 1000 * ours, "baseline_ms": 1000 * theirs, "ratio": ours / theirs,
                     "ringnet_images_per_s": n / ours, "baseline_images_per_s": n / theirs})
        log(f"{size:>5} {1000 * ours:>11.1f} {1000 * theirs:>10.1f} {ours / theirs:>7.3f} {n / ours:>14.1f} "
            f"{n / theirs:>13.1f}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 128])
    parser.add_argument("--rings", type=int, default=1, help="B, rings per step")
    parser.add_argument("--ring-size", type=int, default=6, help="R, images per ring")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--trunk", default="resnet50")
    parser.add_argument("--no-amp", dest="amp", action="store_false", help="no bf16 autocast on CUDA")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    compare_steps(args.sizes, args.rings, args.ring_size, args.repeats, args.warmup, args.device, args.amp,
                  trunk=args.trunk)


if __name__ == "__main__":
    main()
