"""ringnet_lib: RingNet (Sanyal et al., CVPR 2019) rebuilt in PyTorch, for teaching.

Modules, in the order the notebooks explain them: ``params`` (the 159-d
vector), ``lbs`` and ``flame`` (the decoder), ``model_io`` (model files and
the embedded default head), ``landmarks``.
"""
__version__ = "0.1.0"
