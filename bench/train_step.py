"""RingNet's full training step against a plain ResNet-50 training step, same images, one run.

    python bench/train_step.py [--sizes 224 128] [--rings 1] [--ring-size 6] [--repeats 7] [--threads N]

RingNet step: B rings of R images -> ONE encoder call (ResNet-50 + 3 regressor
iterations) -> ONE FLAME call -> 68 landmarks -> weak perspective -> ring loss,
landmark loss, regularisers -> backward -> Adam step.
Baseline: torchvision's ResNet-50 (its 1000-way classifier replaced by a
linear layer to 159 values) -> mean squared output -> backward -> Adam step, on
the same B·R images. Both in training mode (BatchNorm statistics, dropout).

The two are interleaved (A, B, A, B, ...) so that the drifts of a shared
machine hit both alike; the median of each is reported, and the ratio
RingNet / baseline (target: <= 1.05 on CPU at 224 and 128 px).
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


def make_batch(n_rings: int, ring: int, size: int, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {"images": torch.rand(n_rings, ring, 3, size, size, generator=generator),
            "landmarks": 0.5 * (2 * torch.rand(n_rings, ring, 68, 2, generator=generator) - 1),
            "confidence": torch.ones(n_rings, ring, 68), "identity": default_ring_identity(n_rings, ring)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 128])
    parser.add_argument("--rings", type=int, default=1, help="B, rings per step")
    parser.add_argument("--ring-size", type=int, default=6, help="R, images per ring")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    decoder = Decoder()
    ringnet = RingNetEncoder("resnet50", initial_params=decoder.initial_params()).train()
    baseline = torchvision.models.resnet50(weights=None)
    baseline.fc = torch.nn.Linear(2048, N_PARAMS)
    baseline.train()
    ringnet_optimizer = torch.optim.Adam(ringnet.parameters(), lr=1e-4)
    baseline_optimizer = torch.optim.Adam(baseline.parameters(), lr=1e-4)
    count = lambda model: sum(p.numel() for p in model.parameters()) / 1e6
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.rings} ring(s) x R={args.ring_size} "
          f"= {args.rings * args.ring_size} images; RingNet encoder {count(ringnet):.1f} M parameters, "
          f"baseline {count(baseline):.1f} M; landmarks: {decoder.n_landmarks}")

    def ringnet_step(batch):
        prediction = ring_step(ringnet, decoder, batch)
        ringnet_optimizer.zero_grad(set_to_none=True)
        prediction.total.backward()
        ringnet_optimizer.step()

    def baseline_step(batch):
        output = baseline(batch["images"].flatten(0, 1))
        baseline_optimizer.zero_grad(set_to_none=True)
        output.pow(2).mean().backward()
        baseline_optimizer.step()

    print(f"{'size':>5} {'RingNet ms':>11} {'ResNet-50 ms':>13} {'ratio':>7}")
    for size in args.sizes:
        batch = make_batch(args.rings, args.ring_size, size)
        for _ in range(args.warmup):
            ringnet_step(batch)
            baseline_step(batch)
        times = {"ringnet": [], "baseline": []}
        for _ in range(args.repeats):
            for name, step in (("ringnet", ringnet_step), ("baseline", baseline_step)):
                start = time.perf_counter()
                step(batch)
                times[name].append(time.perf_counter() - start)
        ours, theirs = statistics.median(times["ringnet"]), statistics.median(times["baseline"])
        print(f"{size:>5} {1000 * ours:>11.1f} {1000 * theirs:>13.1f} {ours / theirs:>7.3f}", flush=True)


if __name__ == "__main__":
    main()
