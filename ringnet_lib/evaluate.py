"""NoW-style evaluation (the module named in docs/architecture): re-exports :mod:`ringnet_lib.evaluation`.

The code lives in ``ringnet_lib/evaluation/``: ``geometry`` (point-to-triangle
distances, Umeyama), ``now`` (crop, alignment, ICP, statistics), ``benchmark``
(synthetic scans, ``evaluate_shapes``, tables) and ``export`` (NoW file layout).
"""
from .evaluation import *  # noqa: F401,F403
