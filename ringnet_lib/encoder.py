"""RingNet's encoder: a ResNet trunk and an iterative regressor to the 159 parameters.

    images (B x 3 x 224 x 224, RGB in [0, 1])
      -> ImageNet normalisation -> ResNet-50 trunk -> features (B x 2048)
      -> regressor, 3 times:  estimate += MLP(features ⊕ estimate)   (error feedback, as in HMR)
      -> params (B x 159) = camera 3, pose 6, shape 100, expression 50 (see :mod:`ringnet_lib.params`)

The regressor is the paper's: two fully connected layers of 512 units with
ReLU and dropout, then a linear layer to 159 values. It starts from a fixed
initial estimate (zeros except the camera scale, so that projected landmarks
start inside the image) and predicts a *correction* each iteration.

ImageNet weights are never downloaded (there is no internet where this runs):
``weights=None`` by default, or ``weights_path`` pointing at a local
torchvision state dict (e.g. ``resnet50-11ad3fa6.pth``); a missing file is an
error, not a silent fallback. The file is read like a checkpoint (:func:`read_torch_file`: never
unpickling code), and each way it can be wrong is a one-line :class:`~ringnet_lib.cli.ConfigError`
naming ``trunk_weights`` and the file. A ResNet-18 trunk (512 features) is an option
for quick CPU runs, and so is ``small_cnn`` (:class:`SmallConvTrunk`, a training
step 2.2 times faster at 64 px); ResNet-50 stays the default.
"""
from __future__ import annotations

import io
import pickle
import pickletools
import re
import warnings
from pathlib import Path
from typing import NamedTuple

import torch
import torchvision
from torch import nn

from .checks import non_finite_weights
from .cli import ConfigError
from .params import CAMERA, N_PARAMS

# torchvision's ImageNet statistics; the trunk expects images normalised with them.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

TRUNK_FEATURES = {"resnet18": 512, "resnet34": 512, "resnet50": 2048, "resnet101": 2048, "small_cnn": 512}

# Weak-perspective scale of the initial estimate. FLAME heads are ~0.16 m wide
# (metres), normalised image coordinates span [-1, 1]: s = 10 maps a face onto
# ~80% of the crop, so the first projected landmarks lie inside the image.
DEFAULT_CAMERA_SCALE = 10.0


class EncoderOutput(NamedTuple):
    params: torch.Tensor  # B x 159, the last estimate
    estimates: torch.Tensor  # n_iterations x B x 159, every estimate (the last equals params)
    features: torch.Tensor  # B x n_features, the trunk's output


def normalize_images(images: torch.Tensor) -> torch.Tensor:
    """ImageNet normalisation.

    Args:
        images: ``B x 3 x H x W``, RGB in [0, 1].
    Returns:
        ``B x 3 x H x W``: ``(images - mean) / std`` per channel.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be B x 3 x H x W, got {tuple(images.shape)}")
    mean = images.new_tensor(IMAGENET_MEAN)[:, None, None]
    std = images.new_tensor(IMAGENET_STD)[:, None, None]
    return (images - mean) / std


class SmallConvTrunk(nn.Module):
    """A plain conv net for CPU runs: ``B x 3 x H x W -> B x 512`` (H, W >= 16).

    Four stages of (3x3 conv, 3x3 conv with stride 2), each with BatchNorm and ReLU,
    widths 32, 64, 128, 256; then an average pool to a 4 x 4 grid, flattened, and a
    linear layer with ReLU to 512 features. ResNet ends in a *global* average pool,
    so where things are in the image must be carried by the channels; here the 4 x 4
    grid keeps a coarse layout (at 64 px the pool does nothing). 3.3 M parameters
    (ResNet-18: 11.2 M); the quick preset's training step (16 images at 64 px, 2 CPU
    cores) takes 107 ms with it, 233 ms with ResNet-18.
    """

    def __init__(self, width: int = 32, n_features: int = 512, grid: int = 4):
        super().__init__()
        stages, channels = [], 3
        for stage in range(4):
            out = width * 2 ** stage
            stages += [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True),
                       nn.Conv2d(out, out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(out),
                       nn.ReLU(inplace=True)]
            channels = out
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(grid)
        self.project = nn.Sequential(nn.Flatten(), nn.Linear(channels * grid * grid, n_features), nn.ReLU(inplace=True))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``B x 3 x H x W`` (normalised) -> ``B x 512``."""
        return self.project(self.pool(self.stages(images)))


class WeightsFileError(ValueError):
    """A torch file that cannot be read safely. The message is the reason, without the file's name: the caller
    adds the file and what to do. ``kind``: ``"unreadable"``, ``"pickle"`` (a plain Python pickle),
    ``"code"`` (it asks for Python code) or ``"corrupt"``."""

    def __init__(self, reason: str, kind: str):
        super().__init__(reason)
        self.kind = kind


# torch's legacy (non-zip) files start with this number, pickled (torch.serialization.MAGIC_NUMBER).
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_HEADERS = tuple(pickle.dumps(_LEGACY_MAGIC, protocol=p) for p in range(2, pickle.HIGHEST_PROTOCOL + 1))


def pickle_globals(head: bytes, limit: int = 10_000) -> list[str]:
    """The globals (``module.name``) a pickle's first bytes ask for, read with :mod:`pickletools` (nothing is
    unpickled or called); what a truncated or garbled stream shows before it breaks."""
    names, strings = set(), []
    try:
        for count, (opcode, argument, _) in enumerate(pickletools.genops(io.BytesIO(head))):
            if count >= limit:
                break
            if opcode.name in ("GLOBAL", "INST"):
                names.add(str(argument).replace(" ", "."))
            elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                names.add(".".join(strings[-2:]))
            elif isinstance(argument, str):
                strings.append(argument)
    except Exception:  # garbled or cut at the end of `head`: keep what was found before
        pass
    return sorted(names)


def read_torch_file(path: str | Path, allowed_globals=(), what: str = "a weights file") -> object:
    """``torch.load(path, weights_only=True)`` on the CPU, safely: only tensors and plain containers are built,
    any other global is refused before it runs, and every failure is a :class:`WeightsFileError`.

    The one safe reader of torch files (checkpoints, the trunk's weights). A file that is a plain
    Python pickle (``pickle.dump``, not ``torch.save``) is named so without being unpickled, and torch's
    warning about its pickle protocol is silenced during the load attempt only.

    Args:
        path: the file.
        allowed_globals: the few globals the file may ask for besides torch's own (e.g. numpy's for old checkpoints).
        what: what the file should be, for the messages (``"a checkpoint"``).
    """
    path = Path(path)
    try:
        with open(path, "rb") as file:
            head = file.read(1 << 20)
    except OSError as error:
        raise WeightsFileError(f"cannot be read ({error.strerror or error})", "unreadable") from None
    if not head:
        raise WeightsFileError(f"the file is empty, not {what}", "corrupt")
    if head.startswith(b"\x80") and not head.startswith(_LEGACY_HEADERS):
        asks = pickle_globals(head)
        code = f"; it asks for Python code ({', '.join(asks[:3])}), so it may be hostile" if asks else ""
        raise WeightsFileError(f"a plain Python pickle (pickle.dump), not {what} written by torch.save; it was not "
                               f"unpickled{code}", "pickle")
    try:
        with torch.serialization.safe_globals(list(allowed_globals)), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        wanted = re.search(r"GLOBAL ([\w.]+)", str(error))
        if wanted is None:  # not a refused global: a file that is not a torch pickle at all
            raise WeightsFileError(f"not {what} torch can read (the file is corrupt, truncated or of another kind)",
                                   "corrupt") from None
        raise WeightsFileError(f"refused to load: the file asks for Python code ({wanted.group(1)}), which {what} "
                               "never holds; it may be hostile", "code") from None
    except Exception as error:  # whatever a damaged or foreign file makes torch raise
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise WeightsFileError(f"not {what} torch can read ({first[:200]}); the file is corrupt, truncated or of "
                               "another kind", "corrupt") from None


def read_trunk_weights(path: Path, name: str) -> dict:
    """The state dict of a local ``trunk_weights`` file for trunk ``name``, checked: a dict of finite tensors
    (a ``{"state_dict": ...}`` wrapper is opened; the classifier's ``fc.*`` entries are dropped)."""
    source = "torchvision's " if name.startswith("resnet") else "the "
    advice = (f"give a state dict of {source}{name} (torch.save(model.state_dict(), FILE)), or leave "
              "trunk_weights unset for random initial weights")
    try:
        state = read_torch_file(path, what="a weights file")
    except WeightsFileError as error:
        raise ConfigError(f"trunk_weights: {path}: {error}; {advice}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):  # a training checkpoint wrapping them
        state = state["state_dict"]
    if not isinstance(state, dict) or not state:
        held = "an empty dict" if isinstance(state, dict) else type(state).__name__
        raise ConfigError(f"trunk_weights: {path}: holds {held}, not a state dict of {name} weights; {advice}")
    wrong = [key for key, value in state.items() if not isinstance(key, str) or not torch.is_tensor(value)]
    if wrong:
        raise ConfigError(f"trunk_weights: {path}: not a state dict of {name} weights ({wrong[0]!r} is not a named "
                          f"tensor); {advice}")
    state = {key: value for key, value in state.items() if not key.startswith("fc.")}
    bad = non_finite_weights(state)
    if bad:
        raise ConfigError(f"trunk_weights: {path}: the weights are not finite ({bad[0]} and {len(bad) - 1} more); "
                          f"{advice}")
    return state


def build_trunk(name: str = "resnet50", weights_path: str | Path | None = None) -> tuple[nn.Module, int]:
    """A torchvision ResNet without its classifier (or :class:`SmallConvTrunk`): ``B x 3 x H x W -> B x n_features``.

    Args:
        name: one of :data:`TRUNK_FEATURES`.
        weights_path: optional local torchvision state dict (the classifier's
            ``fc.*`` entries are ignored). Never downloaded. A missing file is a ``FileNotFoundError``;
            one that is not ``name``'s weights (any kind of file, read safely) a ``ConfigError``, both
            naming ``trunk_weights`` and the file.
    Returns:
        ``(trunk, n_features)``.
    """
    if name not in TRUNK_FEATURES:
        raise ValueError(f"unknown trunk {name!r}; choose one of {sorted(TRUNK_FEATURES)}")
    if name == "small_cnn":
        trunk = SmallConvTrunk()
    else:
        trunk = getattr(torchvision.models, name)(weights=None)
        trunk.fc = nn.Identity()  # keep the 2048 (or 512) pooled features
    if weights_path is not None:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"trunk_weights: {path}: no such file. ImageNet weights are not downloaded by this code; "
                f"put a {name} state dict there, or leave trunk_weights unset (weights_path=None) for random init.")
        state = read_trunk_weights(path, name)
        try:
            missing, unexpected = trunk.load_state_dict(state, strict=False)
        except RuntimeError as error:  # the names fit, the shapes do not (another trunk's weights)
            first = " ".join(str(error).split())[:200]
            raise ConfigError(f"trunk_weights: {path} does not hold {name} weights (their shapes differ: {first}); "
                              f"give {name}'s own weights or the trunk they belong to") from None
        if missing or unexpected:
            raise ConfigError(f"trunk_weights: {path} does not hold {name} weights: missing {missing[:5]}..., "
                              f"unexpected {unexpected[:5]}...; give {name}'s own weights or the trunk they belong to")
    return trunk, TRUNK_FEATURES[name]


def default_initial_params(camera_scale: float = DEFAULT_CAMERA_SCALE) -> torch.Tensor:
    """The regressor's starting point: ``159``, zeros except the camera scale.

    Zero shape/expression/pose is FLAME's mean head, looking at the camera.
    """
    initial = torch.zeros(N_PARAMS)
    initial[CAMERA.start] = camera_scale
    return initial


class Regressor(nn.Module):
    """The paper's MLP: ``(n_features + 159) -> 512 -> 512 -> 159`` with ReLU and dropout."""

    def __init__(self, n_features: int, hidden: int = 512, dropout: float = 0.5):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(n_features + N_PARAMS, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, N_PARAMS))
        # Small last layer: the first corrections are tiny, so training starts at
        # the initial estimate (landmarks inside the image) rather than somewhere random.
        nn.init.xavier_uniform_(self.layers[-1].weight, gain=0.01)
        nn.init.zeros_(self.layers[-1].bias)

    def forward(self, features: torch.Tensor, estimate: torch.Tensor) -> torch.Tensor:
        """``B x F``, ``B x 159`` -> correction ``B x 159``."""
        return self.layers(torch.cat([features, estimate], dim=1))


class RingNetEncoder(nn.Module):
    """Images to FLAME + camera parameters.

    Args:
        trunk: ``"resnet50"`` (the paper's, default) or a smaller one (``"resnet18"``, ``"small_cnn"``) for CPU runs.
        weights_path: optional local ImageNet weights for the trunk (see :func:`build_trunk`).
        n_iterations: regressor iterations with error feedback (3 in the paper).
        hidden: width of the two hidden layers (512).
        dropout: dropout after each hidden layer.
        initial_params: ``159`` starting estimate; :func:`default_initial_params` when omitted.
        param_scale: ``159`` or scalar; the regressor's output is multiplied by it
            before being added, so blocks of different units (camera scale ~10,
            coefficients ~1) move at sensible rates. 1 by default.
    """

    def __init__(self, trunk: str = "resnet50", weights_path: str | Path | None = None, n_iterations: int = 3,
                 hidden: int = 512, dropout: float = 0.5, initial_params: torch.Tensor | None = None,
                 param_scale: torch.Tensor | float = 1.0):
        super().__init__()
        if n_iterations < 1:
            raise ValueError(f"n_iterations must be >= 1, got {n_iterations}")
        self.trunk_name, self.n_iterations = trunk, n_iterations
        self.trunk, self.n_features = build_trunk(trunk, weights_path)
        self.regressor = Regressor(self.n_features, hidden, dropout)
        initial = default_initial_params() if initial_params is None else torch.as_tensor(initial_params).float()
        if initial.shape != (N_PARAMS,):
            raise ValueError(f"initial_params must have shape ({N_PARAMS},), got {tuple(initial.shape)}")
        # Buffers, not parameters: saved with the model, moved by .to(), never trained.
        self.register_buffer("initial_params", initial.clone())
        self.register_buffer("param_scale", torch.as_tensor(param_scale, dtype=torch.float32).expand(N_PARAMS).clone())

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """``B x 3 x H x W`` in [0, 1] -> ``B x n_features``."""
        return self.trunk(normalize_images(images))

    def regress(self, features: torch.Tensor) -> torch.Tensor:
        """Iterative error feedback. ``B x F`` -> ``n_iterations x B x 159``."""
        # The estimate stays in the buffers' float32 even under bf16 autocast:
        # corrections are small, and adding them in bf16 would round them away.
        estimate = self.initial_params.expand(features.shape[0], -1)
        estimates = []
        for _ in range(self.n_iterations):
            estimate = estimate + self.param_scale * self.regressor(features, estimate)
            estimates.append(estimate)
        return torch.stack(estimates)

    def forward(self, images: torch.Tensor) -> EncoderOutput:
        """``B x 3 x H x W`` RGB in [0, 1] -> :class:`EncoderOutput` (params ``B x 159``)."""
        features = self.features(images)
        estimates = self.regress(features)
        return EncoderOutput(estimates[-1], estimates, features)
