"""scorelab: score-based generative modelling in JAX.

Three objects and everything built from them: noise processes (:mod:`scorelab.noise`),
score models (:mod:`scorelab.models`, any ``score_fn(x, sigma)``) and samplers
(:mod:`scorelab.samplers`); with targets that know their exact scores
(:mod:`scorelab.targets`), losses (:mod:`scorelab.losses`), metrics
(:mod:`scorelab.metrics`) and likelihoods (:mod:`scorelab.likelihood`).
"""

__version__ = "0.1.0"
