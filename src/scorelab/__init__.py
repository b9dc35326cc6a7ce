"""scorelab: score-based generative modelling in JAX.

Three objects and everything built from them: noise processes (:mod:`scorelab.noise`),
score models (:mod:`scorelab.models`, any ``score_fn(x, sigma)``) and samplers
(:mod:`scorelab.samplers`); with targets that know their exact scores
(:mod:`scorelab.targets`), losses (:mod:`scorelab.losses`) and metrics
(:mod:`scorelab.metrics`).
"""

__version__ = "0.1.0"
