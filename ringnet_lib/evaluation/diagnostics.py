"""What has a trained encoder learned? Per-parameter errors and a landmark error budget.

On synthetic data every image comes with its true camera, pose, shape and
expression, so two questions have exact answers:

* **Which parameters does the network predict better than a constant?**
  :func:`parameter_errors` gives, per scalar (camera scale, pitch, jaw opening...),
  the network's mean absolute error next to that of the best constant (the median
  of the truth). A ratio near 1 means "not learned yet".
* **Where does the landmark loss come from?** :func:`landmark_error_budget`
  recomputes the training's landmark loss with one group of predicted parameters
  replaced by the truth. It also gives the loss of the *mean shape* with every
  other parameter true: while the network's loss is above that, its landmark
  error is mostly pose, camera and expression, and the gradient reaching β is
  mostly noise. This is why a short CPU run learns shape last.

    errors, budget = diagnose_encoder(encoder, rings, decoder)   # rings: a SyntheticRingSet
    diagnostics_figure(errors, budget)
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import torch

from ..data.synthetic import SyntheticRingSet
from ..decoder import Decoder
from ..losses import landmark_loss
from ..params import CAMERA, EXPRESSION, POSE, SHAPE, join_params, split_params
from .trained import predict_params

# Scalars of the 159 with a name: (index, name). Pose = global rotation (axis-angle x, y, z), then jaw.
NAMED_SCALARS = ((CAMERA.start, "camera scale s"), (CAMERA.start + 1, "camera tx"), (CAMERA.start + 2, "camera ty"),
                 (POSE.start, "pitch"), (POSE.start + 1, "yaw (about y)"), (POSE.start + 2, "roll"),
                 (POSE.start + 3, "jaw opening"))
GROUPS = {"camera": CAMERA, "pose": POSE, "shape": SHAPE, "expression": EXPRESSION}


def parameter_errors(predicted: torch.Tensor, truth: torch.Tensor) -> dict[str, dict[str, float]]:
    """Mean absolute errors of named parameters, next to the best constant's.

    Args:
        predicted: ``N x 159`` network output.
        truth: ``N x 159`` true parameters of the same images.
    Returns:
        ``{name: {"model": mae, "constant": mae of predicting the median, "ratio": model / constant}}``
        for :data:`NAMED_SCALARS`, plus ``"shape β"`` and ``"expression ψ"`` (errors averaged over
        their coefficients; the constant is the per-coefficient median). Scalars that never vary
        in ``truth`` (roll, in the in-memory data) are left out: no constant can be beaten there.
    """
    if predicted.shape != truth.shape:
        raise ValueError(f"predicted {tuple(predicted.shape)} and truth {tuple(truth.shape)} differ")
    predicted, truth = predicted.double(), truth.double()
    model = (predicted - truth).abs().mean(0)  # 159
    constant = (truth - truth.median(0).values).abs().mean(0)  # the median minimises the mean absolute error
    rows = {name: (model[i], constant[i]) for i, name in NAMED_SCALARS if constant[i] > 0}
    rows["shape β"] = (model[SHAPE].mean(), constant[SHAPE].mean())
    rows["expression ψ"] = (model[EXPRESSION].mean(), constant[EXPRESSION].mean())
    return {name: {"model": float(m), "constant": float(c), "ratio": float(m / c)} for name, (m, c) in rows.items()}


def landmark_error_budget(decoder: Decoder, predicted: torch.Tensor, truth: torch.Tensor, landmarks: torch.Tensor,
                          confidence: torch.Tensor | None = None) -> dict[str, float]:
    """The training's landmark loss with groups of predicted parameters swapped for the truth.

    Args:
        decoder: the decoder training used.
        predicted: ``N x 159`` network output.
        truth: ``N x 159`` true parameters.
        landmarks: ``N x 68 x 2`` targets (normalised).
        confidence: ``N x 68`` or None.
    Returns (in this order):
        ``"prediction"``; ``"<group> from the truth"`` for camera, pose, expression and shape;
        ``"only shape predicted"`` (everything else true: the error the shape prediction alone causes);
        ``"mean shape, rest true"`` (β = 0, everything else true); ``"truth"`` (0 up to rounding).
    """
    index = decoder.target_index.cpu()
    dtype = decoder.flame.v_template.dtype

    def loss(params: torch.Tensor) -> float:
        projected = decoder(params.to(dtype)).landmarks2d
        return float(landmark_loss(projected, landmarks[:, index].to(projected),
                                   None if confidence is None else confidence[:, index].to(projected)))

    def mixed(true_groups) -> torch.Tensor:
        params = predicted.clone()
        for name in true_groups:
            params[:, GROUPS[name]] = truth[:, GROUPS[name]]
        return params

    with torch.no_grad():
        budget = {"prediction": loss(predicted)}
        for name in ("camera", "pose", "expression", "shape"):
            budget[f"{name} from the truth"] = loss(mixed([name]))
        budget["only shape predicted"] = loss(mixed(["camera", "pose", "expression"]))
        camera, pose, shape, expression = split_params(truth)
        budget["mean shape, rest true"] = loss(join_params(camera, pose, torch.zeros_like(shape), expression))
        budget["truth"] = loss(truth)
    return budget


def diagnose_encoder(encoder, rings: SyntheticRingSet, decoder: Decoder, n_images: int = 200, batch: int = 50):
    """:func:`parameter_errors` and :func:`landmark_error_budget` on the first ``n_images`` of a ring set
    that knows its truth (a :class:`~ringnet_lib.data.synthetic.SyntheticRingSet`, data ``"render"``).

    The encoder runs in eval mode (dropout off, BatchNorm running statistics), as at test time.
    """
    if not isinstance(rings, SyntheticRingSet) or rings.n_images == 0:
        raise TypeError(f"{type(rings).__name__} does not know the true parameters of its images; "
                        "use the rendered rings of data='render' (a pool of identities)")
    rendered = rings.render_images(torch.arange(min(n_images, rings.n_images)), decoder)
    predicted = predict_params(encoder, rendered["images"], batch)
    truth = rendered["true_params"].cpu().float()
    errors = parameter_errors(predicted, truth)
    budget = landmark_error_budget(decoder, predicted, truth, rendered["landmarks"].cpu(),
                                   rendered["confidence"].cpu())
    return errors, budget


def diagnostics_figure(errors: dict, budget: dict, image_size: int | None = None):
    """Two panels: per-parameter error ratios (network / best constant) and the landmark budget.

    ``image_size``: when given, the budget is also labelled in pixels (L1 over x and y).
    Returns the Figure.
    """
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 3.8))
    names = list(errors)
    ratios = [errors[name]["ratio"] for name in names]
    left.barh(names, ratios, color=["tab:green" if r < 0.5 else "tab:orange" if r < 0.9 else "tab:red"
                                    for r in ratios])
    left.axvline(1.0, color="k", lw=1)
    for y, r in enumerate(ratios):
        left.annotate(f"{r:.2f}", (r, y), xytext=(3, -4), textcoords="offset points")
    left.set_xlabel("mean abs. error / best constant's  (1 = not learned)")
    left.invert_yaxis()
    left.set_title("what the network predicts")

    labels = list(budget)
    values = [budget[label] for label in labels]
    colours = ["tab:blue"] + ["tab:gray"] * (len(labels) - 3) + ["tab:purple", "k"]
    right.barh(labels, values, color=colours)
    for y, v in enumerate(values):
        text = f"{v:.3f}" + (f" ({v * image_size / 2:.1f} px)" if image_size else "")
        right.annotate(text, (v, y), xytext=(3, -4), textcoords="offset points")
    right.set_xlim(0, 1.35 * max(values + [1e-6]))
    right.invert_yaxis()
    right.set_xlabel("landmark loss (L1, normalised units)")
    right.set_title("landmark error budget")
    figure.tight_layout()
    return figure
