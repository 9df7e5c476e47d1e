"""The training loop: one function for every front door (Python, CLI, papermill, torchrun).

    from ringnet_lib.training import TrainConfig, train
    result = train(TrainConfig.from_preset("quick", epochs=1))

Each step reads: loader batch -> (render on the device) -> :func:`~ringnet_lib.training.step.ring_step`
(encoder -> decoder -> losses) -> backward -> guard -> Adam step -> log -> checkpoint.

Choices (say them once): Adam at lr 1e-4 (the paper's); the encoder alone is trained (the
decoder holds buffers only); BatchNorm statistics are per process (``bn_mode="train"``), or
synchronised (``"sync"``, SyncBatchNorm) or frozen (``"eval"``, running statistics) on request;
bf16 autocast and channels_last only on CUDA (the trunk only; the decoder and the losses stay
float32).

The guard. A step whose loss or gradients are not finite, or whose total loss is more than
:data:`DIVERGENCE_FACTOR` times the median of the last :data:`SANITY_WINDOW` steps' totals, stops
the run before its optimiser step, naming the step. A checkpoint is *sane* when the weights it
holds passed that guard once more: it is written as ``checkpoint.pt.pending`` and becomes
``checkpoint.pt`` only after the next step's loss (or, after the last step, a check on the
first rings) is finite and within the bound. So a run that blows up (``--lr 1e6``) leaves the
checkpoint of the last weights that still gave a sane loss, never the blown-up ones.
"""
from __future__ import annotations

import os
import random
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..checks import check_out_dir, non_finite_weights, remove_if_empty
from ..cli import ConfigError
from ..data.sampler import collate_rings
from ..decoder import Decoder
from ..face_region import face_region_error_mm
from ..params import SHAPE
from . import checkpoint as ckpt
from .config import TrainConfig, check_compatible, validate_config
from .data import make_loader, make_rings, prepare_batch
from .distributed import any_process, cleanup_distributed, gather_objects, mean_over_processes, setup_distributed
from .logging import RunLogger
from .model import build_decoder, build_encoder, set_train_mode
from .step import ring_step

DIVERGENCE_FACTOR = 100.0  # a total loss this many times the recent median: the run has diverged
SANITY_WINDOW = 20  # steps in that median


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)  # one dict of loss terms per step
    checkpoint: Path | None = None
    initial_metrics: dict = field(default_factory=dict)
    final_metrics: dict = field(default_factory=dict)
    steps: int = 0
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)  # e.g. a resume that is no longer bit-for-bit exact


class NonFiniteLossError(RuntimeError):
    """A loss or gradient became NaN/Inf, or the loss diverged; the last checkpoint of a sane step is kept."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def first_rings(rings, count: int) -> dict:
    """The first ``count`` rings of epoch 0 as one batch (the start/end metrics' fixed sample)."""
    return collate_rings([rings[(0, index)] for index in range(min(count, len(rings)))])


@torch.no_grad()
def landmark_check(encoder, decoder: Decoder, rings, n_rings: int, device) -> float:
    """The landmark loss of the first rings in eval mode (a check of the weights; NaN when they blew up)."""
    was_training = encoder.training
    encoder.eval()
    batch = prepare_batch(first_rings(rings, n_rings), rings, decoder, device)
    loss = ring_step(encoder, decoder, batch).terms["landmarks"].item()
    encoder.train(was_training)
    return loss


@torch.no_grad()
def evaluate(encoder, decoder: Decoder, rings, n_rings: int, device) -> dict:
    """Landmark loss and shape error on the first rings, in eval mode.

    ``shape_error_mm`` (data with ground truth): the mean vertex distance between the predicted
    and the true neutral meshes over the face, after a similarity fit
    (:func:`ringnet_lib.face_region.face_region_error_mm`); ``mean_shape_error_mm``: the same for β = 0.
    """
    was_training = encoder.training
    encoder.eval()
    batch = prepare_batch(first_rings(rings, n_rings), rings, decoder, device)
    prediction = ring_step(encoder, decoder, batch)
    metrics = {"landmarks": prediction.terms["landmarks"].item()}
    if "true_shape" in batch:
        predicted = prediction.params[..., SHAPE].flatten(0, 1)
        truth = batch["true_shape"].flatten(0, 1).to(predicted.dtype)
        metrics["shape_error_mm"] = face_region_error_mm(decoder, predicted, truth).mean().item()
        metrics["mean_shape_error_mm"] = face_region_error_mm(decoder, torch.zeros_like(truth), truth).mean().item()
    encoder.train(was_training)
    return metrics


def train(config: TrainConfig, on_step=None, decoder: Decoder | None = None) -> TrainResult:
    """Train the encoder.

    Args:
        config: the run.
        on_step: ``on_step(step, record)`` after every step (live plots); raising stops the run.
        decoder: an already built decoder for ``config.flame_model`` (saves building it twice in a notebook).
    Returns:
        :class:`TrainResult`.
    """
    validate_config(config)
    if config.threads:
        torch.set_num_threads(config.threads)
    device = torch.device(config.device)
    context = setup_distributed(device.type)
    try:
        return _train(config, on_step, device, context, decoder)
    finally:
        cleanup_distributed(context)


def _resume_state(config: TrainConfig, checkpoint_path: Path, result: TrainResult) -> dict | None:
    """The checkpoint to resume from (None: start afresh); refuses to overwrite a run silently."""
    if config.resume is None:
        if checkpoint_path.exists() and not config.overwrite:
            raise ConfigError(f"out_dir: {checkpoint_path} exists (a previous run). Continue it with --resume auto, "
                              "replace it with --overwrite, or choose another --out-dir")
        return None
    resume_path = checkpoint_path if config.resume == "auto" else Path(config.resume)
    if config.resume == "auto" and not resume_path.is_file():
        return None
    saved = ckpt.load_checkpoint(resume_path)
    result.warnings += check_compatible(saved["config"], config)
    bad = non_finite_weights(saved["model"])
    if bad:
        raise ckpt.CheckpointError(f"{resume_path}: the saved weights are not finite ({bad[0]} and {len(bad) - 1} "
                                   "more); it cannot be resumed: start a new run")
    return saved


def _train(config: TrainConfig, on_step, device, context, decoder: Decoder | None) -> TrainResult:
    started = time.perf_counter()
    out_dir = Path(config.out_dir)
    checkpoint_path = out_dir / ckpt.CHECKPOINT_NAME
    result = TrainResult(checkpoint=checkpoint_path)
    made = check_out_dir(out_dir) if context.is_main else []
    try:
        return _train_in(config, on_step, device, context, decoder, started, out_dir, checkpoint_path, result, made)
    except BaseException:
        remove_if_empty(made)  # refused before the first step: leave no empty folder behind
        raise


def _train_in(config: TrainConfig, on_step, device, context, decoder: Decoder | None, started: float,
              out_dir: Path, checkpoint_path: Path, result: TrainResult, made: list[Path]) -> TrainResult:
    """:func:`train` once the out_dir is there; ``made``: the folders it made, emptied when the run starts
    (a run that started keeps its folder, whatever happens)."""
    saved = _resume_state(config, checkpoint_path, result)
    for message in result.warnings:
        print(f"warning: {message}")
    decoder = build_decoder(config) if decoder is None else decoder
    rings = make_rings(config, decoder)  # bad paths / ring sizes fail here, before any training
    decoder = decoder.to(device)
    seed_everything(config.seed)  # the same initial weights in every process
    encoder = build_encoder(config, decoder, rings.mean_camera(decoder)).to(device)
    use_cuda = device.type == "cuda"
    if use_cuda and config.channels_last:
        encoder = encoder.to(memory_format=torch.channels_last)
    if context.enabled and config.bn_mode == "sync":
        encoder = torch.nn.SyncBatchNorm.convert_sync_batchnorm(encoder)
    optimizer = torch.optim.Adam(encoder.parameters(), lr=config.lr)
    batches_per_epoch = len(rings) // config.batch_size
    if batches_per_epoch < 1:
        raise ConfigError(f"batch_size: {config.batch_size} rings per step, but an epoch has only {len(rings)}; "
                          "lower batch_size or add data")
    total_steps = config.max_steps if config.max_steps is not None else config.epochs * batches_per_epoch

    step = 0
    if saved is not None:
        encoder.load_state_dict(ckpt.strip_wrappers(saved["model"]))
        optimizer.load_state_dict(saved["optimizer"])
        step, result.history = saved["step"], list(saved["history"])
        result.initial_metrics = saved.get("initial_metrics", {})
    elif context.is_main and config.eval_rings:
        result.initial_metrics = evaluate(encoder, decoder, rings, config.eval_rings, device)
    model = encoder
    if context.enabled:
        model = torch.nn.parallel.DistributedDataParallel(
            encoder, device_ids=[context.local_rank] if use_cuda else None)
    if saved is not None:
        states = saved["rng"]
        ckpt.set_rng_state(states[context.rank] if len(states) == context.world_size else states[0])
    else:
        seed_everything(config.seed + context.rank)  # dropout differs between processes, as it should

    pending = checkpoint_path.with_name(checkpoint_path.name + ".pending")

    def save() -> None:
        states = gather_objects(ckpt.rng_state(), context)
        if context.is_main:
            ckpt.save_checkpoint(pending, {
                "format_version": ckpt.FORMAT_VERSION, "model": encoder.state_dict(),
                "optimizer": optimizer.state_dict(), "step": step, "rng": states, "history": result.history,
                "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
                "initial_metrics": result.initial_metrics})

    def promote() -> None:  # the pending checkpoint's weights just passed the guard
        if context.is_main and pending.exists():
            os.replace(pending, checkpoint_path)

    def stop(reason: str, after_last_step: bool = False) -> NonFiniteLossError:
        if context.is_main:
            pending.unlink(missing_ok=True)
        kept = (f"the last sane checkpoint (step {ckpt.checkpoint_step(checkpoint_path)}) is kept: {checkpoint_path}"
                if checkpoint_path.exists() else "no checkpoint was written yet")
        where = f"after the last step ({step})" if after_last_step else f"at step {step + 1}; stopped before its " \
            "optimiser step"
        return NonFiniteLossError(f"{reason} {where}, {kept}. Lower --lr, or check the data for NaN values")

    def diverged(total: float) -> bool:
        recent = [r["total"] for r in result.history[-SANITY_WINDOW:]]
        return len(recent) >= 1 and total > DIVERGENCE_FACTOR * statistics.median(recent)

    loader = make_loader(config, rings, context.rank, context.world_size, step, total_steps, decoder)
    made.clear()  # the run starts: from here on out_dir is its, even if it stops before writing anything
    logger = RunLogger(config, out_dir, total_steps, step, enabled=context.is_main)
    amp_dtype = torch.bfloat16 if use_cuda and config.amp else None
    weights = config.loss_weights()
    set_train_mode(encoder, config.bn_mode)
    try:
        for batch in loader:
            batch = prepare_batch(batch, rings, decoder, device, use_cuda and config.channels_last)
            prediction = ring_step(model, decoder, batch, config.consistency, weights, config.margin, amp_dtype)
            optimizer.zero_grad(set_to_none=True)
            prediction.total.backward()
            # One device sync for the loss and all gradients (not one per tensor).
            checks = [torch.isfinite(prediction.total.detach())]
            checks += [torch.isfinite(p.grad).all() for p in encoder.parameters() if p.grad is not None]
            if any_process(not bool(torch.stack(checks).all()), context, device):
                terms = ", ".join(f"{k} {float(v.detach()):.3g}" for k, v in prediction.terms.items())
                raise stop(f"non-finite loss or gradient ({terms})")
            total = float(prediction.total.detach())
            if any_process(diverged(total), context, device):
                raise stop(f"the loss diverged (total {total:.3g}, more than {DIVERGENCE_FACTOR:g} times the "
                           f"median of the last {SANITY_WINDOW} steps)")
            promote()
            optimizer.step()
            step += 1
            record = {k: float(v.detach()) for k, v in prediction.terms.items()}
            record["total"] = total
            record = mean_over_processes(record, context, device)
            record["step"] = step
            result.history.append(record)
            logger.step(step, record, batch, prediction, decoder.target_index)
            if step % config.checkpoint_every == 0 or step == total_steps:
                save()
            if on_step is not None:
                on_step(step, record)
    finally:
        logger.close()
    if context.is_main:
        # The last update has no next step to vouch for it: check its weights on the first rings.
        check = landmark_check(encoder, decoder, rings, config.eval_rings or config.batch_size, device)
        recent = [r["total"] for r in result.history[-SANITY_WINDOW:]]
        if not np.isfinite(check) or (recent and config.w_landmarks * check > DIVERGENCE_FACTOR
                                      * statistics.median(recent)):
            raise stop(f"the final weights give a landmark loss of {check:.3g}", after_last_step=True)
        promote()
        if config.eval_rings:
            result.final_metrics = evaluate(encoder, decoder, rings, config.eval_rings, device)
    result.steps, result.seconds = step, time.perf_counter() - started
    return result
