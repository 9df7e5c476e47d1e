"""Training: the config, the step, the loop, checkpoints, distributed set-up.

    from ringnet_lib.training import TrainConfig, train
    result = train(TrainConfig.from_preset("quick", epochs=1))

* :mod:`.config` - :class:`TrainConfig` (fields = papermill parameters = CLI flags), presets, validation;
* :mod:`.model` - the decoder and encoder a config describes;
* :mod:`.data` - the config's data source as rings, and its DataLoader;
* :mod:`.step` - :func:`ring_step`: encoder -> decoder -> losses for a batch of rings;
* :mod:`.loop` - :func:`train`: the loop, the guard, resume;
* :mod:`.checkpoint` - saving, safe loading, and the checkpoint -> encoder loader;
* :mod:`.distributed`, :mod:`.logging` - DDP and progress/TensorBoard.
"""
from .checkpoint import CheckpointError, load_checkpoint, load_encoder
from .config import PRESETS, TrainConfig, changed_fields, validate_config
from .loop import NonFiniteLossError, TrainResult, train
from .model import build_decoder, build_encoder, set_train_mode
from .step import RingPrediction, ring_step

__all__ = ["CheckpointError", "load_checkpoint", "load_encoder", "PRESETS", "TrainConfig", "changed_fields",
           "validate_config", "NonFiniteLossError", "TrainResult", "train", "build_decoder", "build_encoder",
           "set_train_mode", "RingPrediction", "ring_step"]
