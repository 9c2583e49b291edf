"""l2l: Listen to Look (Gao et al., CVPR 2020) as a staged extraction pipeline, a feature store and
light trainers.  Sub-packages: ``stages`` (one module per extraction stage), ``store`` (the feature
store protocol and its backends), ``pipeline`` (orchestration), ``models``, ``training``,
``evaluation``, ``datasets`` and ``cli``."""

__version__ = "0.1.0"
