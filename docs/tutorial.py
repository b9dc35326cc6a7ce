# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Tutorial: score-based generative modelling with scorelab
#
# This is the founding tutorial of scorelab, rebuilt on the library. It tells the same story
# (learn the score of a two-dimensional Gaussian mixture three ways, sample it with Langevin
# dynamics and DDIM, measure the samples) with a few library calls per section, and shows
# the same pictures. Each section states its equations; the code calls
# [`scorelab`](api/index.md), whose docstrings carry the derivations and references.
#
# If $q_d$ is the density of the distribution of interest, its **score** is
# $\nabla \log q_d(x)$. Score-based generative modelling estimates the score from samples
# $\mathcal{D} = \{X_1, \dots, X_n\}$: for a parametric family $s_\theta$ (a network), it
# searches
#
# $$
# \theta \in \operatorname{argmin}_\theta\;
# \mathbb{E}_{X \sim q_d}\big[\|s_\theta(X) - \nabla \log q_d(X)\|^2\big],
# $$
#
# then samples with the learned score. The objective cannot be computed as written (the
# score is unknown); the sections below present three ways around that:
#
# 1. Hyvärinen, A. (2005). *Estimation of Non-Normalized Statistical Models by Score
#    Matching.* JMLR 6, 695–709. <https://jmlr.org/papers/v6/hyvarinen05a.html>
# 2. Vincent, P. (2011). *A Connection Between Score Matching and Denoising Autoencoders.*
#    Neural Computation 23(7). <https://doi.org/10.1162/NECO_a_00142>
# 3. Song, Y. & Ermon, S. (2019). *Generative Modeling by Estimating Gradients of the Data
#    Distribution.* NeurIPS. <https://arxiv.org/abs/1907.05600>
#
# The notebook's source is [`docs/tutorial.py`](tutorial.py) (Jupytext percent format; open
# it in Jupyter with Jupytext, or run it as a script); the executed notebook is
# [`tutorial.ipynb`](tutorial.ipynb).
#
# ## Parameters
#
# By default the notebook runs at **reduced sizes** (smaller networks, fewer training steps
# and frames) so that it executes in a few minutes on two CPU cores; this is how the
# documentation is built and how CI runs it. Set `SCORELAB_TUTORIAL_FULL=1` for the founding
# tutorial's sizes (its networks, 3000 training steps at batch 2048, the full DDIM sweep).
# At those sizes, `python scripts/docs/build_tutorial.py --full` took 11 min 45 s on two CPU
# cores (704 s in the cells, 2.6 GB peak memory; 16 min 47 s before session 4's faster
# layers). It printed:
#
# - held-out Hyvärinen loss -9.76 ± 0.17, against -10.00 ± 0.16 for the exact score;
# - held-out DSM loss 0.186 against 0.185;
# - NCSN with annealed Langevin: mode-weight TV 0.037 (floor 0.020);
# - SW 0.97 for the linear output layer and 9.35 for the tutorial's leaky ReLU (floor 0.89).

# %% tags=["parameters"]
import os

FULL = os.environ.get("SCORELAB_TUTORIAL_FULL", "0") == "1"

SEED = 0
N_DATA = 10_000  # training set size (the tutorial's)
N_SAMPLES = 2000 if FULL else 1000  # samples per measured sampler run
N_CHAINS = 20  # chains drawn in the animations (the tutorial's)
MLP_WIDTHS = (128, 512, 256) if FULL else (64, 128, 64)  # the tutorial's unconditional MLP
NCSN_WIDTHS = (256, 512, 256) if FULL else (64, 128, 64)  # the tutorial's NCSN MLP
STEPS = 3000 if FULL else 600  # Hyvärinen, Hutchinson and DSM training steps
BATCH_SIZE = 2048 if FULL else 256
NCSN_STEPS = 3000 if FULL else 1500
NCSN_BATCH_SIZE = 2048 if FULL else 512
LEARNING_RATE = 1e-3
LANGEVIN_LR = 1e-2  # ULA step size (the tutorial's)
ULA_STEPS = 1000
DSM_SIGMA = 1.0
ANNEALED_LEVELS = 100
DDIM_ES = (0.0, 0.1, 0.5, 1.0)
DDIM_NS = tuple(k * k for k in range(2, 11)) if FULL else (4, 9, 25, 100)
SW_PROJECTIONS = 1000 if FULL else 250
GIF_FRAMES = 50 if FULL else 20

# %% [markdown]
# Imports, the root key, and two helpers: `key_for(name)` derives a named key from the root
# key (distinct names never share a key, and no key is used twice), and `show` saves a figure
# or animation under `figures/` and displays it.

# %%
import functools
import zlib
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from IPython.display import Image

from scorelab import losses, metrics, noise, samplers, viz
from scorelab.models import MLP, ExactScore, NoiseConditionalMLP
from scorelab.targets import seed_mixture
from scorelab.training import TrainConfig, train

KEY = jax.random.key(SEED)
FIGURES = Path("figures")


def key_for(name: str) -> jax.Array:
    """A key of its own for each named use: fold_in(KEY, crc32(name))."""
    return jax.random.fold_in(KEY, zlib.crc32(name.encode()))


def show(figure_or_path, name: str | None = None) -> Image:
    """Display a matplotlib Figure (saved as figures/<name>.png) or an animation file."""
    if name is not None:
        figure_or_path = viz.save_figure(figure_or_path, FIGURES / f"{name}.png", dpi=100)
    return Image(filename=str(figure_or_path))


def ula_frames(n_steps: int) -> list[int]:
    """Animation frames over a chain of n_steps: GIF_FRAMES evenly spread steps."""
    return np.linspace(0, n_steps - 1, GIF_FRAMES).round().astype(int).tolist()


# %% [markdown]
# ## The score
#
# The target is the tutorial's mixture of nine isotropic Gaussians on the grid
# $\{-10, 0, 10\}^2$ with covariance $0.1\,I$ and random weights $w_k$
# ([`seed_mixture`][scorelab.targets.seed_mixture]). A Gaussian mixture's score is known in
# closed form,
#
# $$
# \nabla \log q(x) = \sum_k p(k \mid x)\, C_k^{-1} (\mu_k - x),
# \qquad p(k \mid x) = \frac{w_k \mathcal{N}(x; \mu_k, C_k)}{\sum_j w_j \mathcal{N}(x; \mu_j, C_j)},
# $$
#
# and so is the score of every noised version $q_\sigma = q * \mathcal{N}(0, \sigma^2 I)$ (each
# component's covariance becomes $C_k + \sigma^2 I$). [`ExactScore`][scorelab.models.ExactScore]
# wraps it as a score model `score_fn(x, sigma)`: it is the **oracle** every learned model and
# every sampler is measured against below.

# %%
target = seed_mixture()
exact_score = ExactScore(target)
data = np.asarray(target.sample(key_for("data"), N_DATA))  # (10000, 2)
print("mixture weights:", np.round(np.asarray(target.weights), 3))
show(
    viz.score_field(viz.mesh_score(exact_score), data[:1000], lim=15, title="Exact score"),
    "score_exact",
)

# %% [markdown]
# ## Sampling with the true score: the unadjusted Langevin algorithm
#
# The unadjusted Langevin algorithm (ULA) discretises the Langevin diffusion, whose stationary
# law is $q$:
#
# $$
# x_{k+1} = x_k + \gamma\, \nabla \log q(x_k) + \sqrt{2\gamma}\, z_k,
# \qquad z_k \sim \mathcal{N}(0, I).
# $$
#
# It is biased by $O(\gamma)$ (Roberts & Tweedie, 1996; Durmus, Majewski & Miasojedow, 2019).
# As in the tutorial, 20 chains start from $\mathcal{N}(0, 100\, I)$ and take 1000 steps of
# $\gamma = 10^{-2}$. A sampler in scorelab is a pure function of one chain built on
# `lax.scan` ([`samplers.ula`][scorelab.samplers.ula]);
# [`samplers.sample`][scorelab.samplers.sample] `vmap`s it over chains, chain $i$ drawing its
# noise from `fold_in(key, i)`.

# %%
ula = samplers.ula(LANGEVIN_LR, ULA_STEPS)
x_init = samplers.ve_prior(key_for("ula prior"), N_CHAINS, 2, 10.0)  # N(0, 100 I)
out = samplers.sample(key_for("ula exact"), ula, exact_score, x_init, trajectory=True)
show(
    viz.animate_trajectories(
        out.trajectory,
        FIGURES / "ula_exact.gif",
        data[:1000],
        viz.mesh_score(exact_score, n=25),
        frames=ula_frames(ULA_STEPS),
        lim=15,
        title="ULA with the exact score",
    )
)

# %% [markdown]
# Each chain finds a mode quickly and then stays there: modes 10 apart with standard
# deviation 0.32 are separated by a barrier ULA does not cross in 1000 steps, so the fraction
# of chains in each mode is decided by where they started, not by the weights $w_k$. The
# [mixture report][scorelab.metrics.mixture_report] measures this on many chains: the total
# variation between the fractions of samples per mode and the weights, beside the same
# number for exact samples of the same size (the **floor**).

# %%
x_init = samplers.ve_prior(key_for("ula prior many"), N_SAMPLES, 2, 10.0)
x_ula = samplers.sample(key_for("ula exact many"), ula, exact_score, x_init).x
report = metrics.mixture_report(x_ula, target)
report_exact = metrics.mixture_report(target.sample(key_for("exact samples"), N_SAMPLES), target)
print(f"ULA with the exact score: mode-weight TV {report.total_variation:.3f}")
print(f"exact samples (one set):  mode-weight TV {report_exact.total_variation:.3f}")

# %% [markdown]
# ## Hyvärinen score matching
#
# Integrating by parts removes the unknown score from the objective (Hyvärinen, 2005, eq. 4):
# up to a constant,
#
# $$
# \tfrac12\,\mathbb{E}_{q}\|s_\theta(X) - \nabla \log q(X)\|^2
# = \mathbb{E}_{q}\Big[\operatorname{tr} \nabla_x s_\theta(X) + \tfrac12 \|s_\theta(X)\|^2\Big]
# + \text{const}.
# $$
#
# [`losses.hyvarinen_loss`][scorelab.losses.hyvarinen_loss] computes the trace exactly with $d$
# forward-mode Jacobian-vector products. The model is the tutorial's MLP
# ([`MLP`][scorelab.models.MLP]: Linear–LayerNorm–activation blocks) with a **linear** output
# layer, inputs scaled to unit variance, and SiLU instead of leaky-ReLU activations: the trace
# term reaches the biases that place a piecewise-linear network's kinks only through the
# activation's second derivative, which is zero almost everywhere (see
# [what scorelab fixes](#what-scorelab-fixes)).
# [`training.train`][scorelab.training.train] runs optax's Adam over mini-batches drawn with
# replacement, several steps per jitted `lax.scan`.

# %%
data_scale = float(np.std(data))
config = TrainConfig(
    steps=STEPS, learning_rate=LEARNING_RATE, batch_size=BATCH_SIZE, schedule="cosine"
)
hyvarinen = train(
    key_for("train hyvarinen"),
    MLP(key_for("init hyvarinen"), widths=MLP_WIDTHS, input_scale=data_scale, activation="silu"),
    losses.hyvarinen_loss,
    data,
    config,
    progress=False,
)


def mean_loss(loss_fn, score_fn, points, name):
    """Mean per-example loss over points with one key per example, and its standard error."""
    keys = jax.vmap(lambda i: jax.random.fold_in(key_for(name), i))(jnp.arange(len(points)))
    values = jax.vmap(lambda k, x: loss_fn(k, score_fn, x))(keys, points)
    return float(values.mean()), float(values.std() / np.sqrt(len(points)))


held_out = target.sample(key_for("held-out"), 4000)
exact_hyvarinen = functools.partial(losses.hyvarinen_loss, sigma=0.0)
model_value = mean_loss(losses.hyvarinen_loss, hyvarinen.model, held_out, "held-out hyvarinen")
exact_value = mean_loss(exact_hyvarinen, exact_score, held_out, "held-out hyvarinen")
print(
    "held-out Hyvärinen loss: model {:.3f} ± {:.3f}, exact score {:.3f} ± {:.3f}".format(
        *model_value, *exact_value
    )
)
show(
    viz.loss_curves({"hyvarinen": hyvarinen.losses}, {"hyvarinen": exact_value[0]}),
    "loss_hyvarinen",
)

# %% [markdown]
# The exact score's loss (dashed) is the lowest any model can reach. Sampling the learned
# model with the same ULA as above:

# %%
x_init = samplers.ve_prior(key_for("ula prior"), N_CHAINS, 2, 10.0)  # the same starting points
out = samplers.sample(key_for("ula hyvarinen"), ula, hyvarinen.model, x_init, trajectory=True)
field_hyvarinen = viz.mesh_score(hyvarinen.model, n=25)
show(
    viz.animate_trajectories(
        out.trajectory,
        FIGURES / "ula_hyvarinen.gif",
        data[:1000],
        field_hyvarinen,
        frames=ula_frames(ULA_STEPS),
        lim=15,
        title="ULA with the Hyvärinen model",
    )
)

# %% [markdown]
# ## Without the Jacobian: Hutchinson's estimator and sliced score matching
#
# The exact trace costs $d$ Jacobian-vector products, which is what the founding tutorial's
# unfinished `use_hutching_trick` branch wanted to avoid. For any random probe $v$ with
# $\mathbb{E}[v v^\top] = I$, $\mathbb{E}[v^\top J v] = \operatorname{tr} J$ (Hutchinson, 1989),
# so one probe gives an **unbiased** estimate of the loss at the cost of one product:
#
# $$
# \ell_{\text{Hutchinson}}(x) = \tfrac12 \|s_\theta(x)\|^2 + \frac1n \sum_{k=1}^n v_k^\top
# \nabla_x s_\theta(x)\, v_k .
# $$
#
# Sliced score matching (Song et al., 2019, <https://arxiv.org/abs/1905.07088>) projects the
# score too: $\ell_{\text{SSM}}(x) = \frac1n \sum_k \big[v_k^\top \nabla_x s_\theta(x)\, v_k +
# \tfrac12 (v_k^\top s_\theta(x))^2\big]$ with Gaussian $v_k$. Both are unbiased for the
# Hyvärinen loss; they differ in variance. Checked on the trained model, per example, against
# the exact trace:

# %%
points = held_out[:2000]
estimators = {
    "hutchinson (Rademacher)": losses.hutchinson_loss,
    "hutchinson (Gaussian)": functools.partial(losses.hutchinson_loss, probe="gaussian"),
    "sliced": losses.sliced_score_matching_loss,
}
exact_trace = jax.vmap(lambda x: losses.hyvarinen_loss(None, hyvarinen.model, x))(points)
keys = jax.vmap(lambda i: jax.random.fold_in(key_for("probes"), i))(jnp.arange(len(points)))
for name, loss_fn in estimators.items():
    estimate = jax.vmap(functools.partial(loss_fn, score_fn=hyvarinen.model))(keys, x=points)
    difference = estimate - exact_trace
    print(
        f"{name:24s} bias {float(difference.mean()):+.4f} ± "
        f"{float(difference.std() / np.sqrt(len(points))):.4f} (1 s.e.), "
        f"sd per example {float(difference.std()):.3f}"
    )

# %% [markdown]
# The biases are within a few standard errors of zero. Training with one Rademacher probe
# per example learns the same score:

# %%
hutchinson = train(
    key_for("train hutchinson"),
    MLP(key_for("init hutchinson"), widths=MLP_WIDTHS, input_scale=data_scale, activation="silu"),
    losses.hutchinson_loss,
    data,
    config,
    progress=False,
)
hutchinson_value = mean_loss(losses.hyvarinen_loss, hutchinson.model, held_out, "held-out hutch")
print(
    "held-out Hyvärinen loss of the Hutchinson-trained model: {:.3f} ± {:.3f}".format(
        *hutchinson_value
    )
)
show(
    viz.loss_curves(
        {"hyvarinen (exact trace)": hyvarinen.losses, "hutchinson (1 probe)": hutchinson.losses},
        {"hyvarinen (exact trace)": exact_value[0], "hutchinson (1 probe)": exact_value[0]},
    ),
    "loss_hutchinson",
)

# %% [markdown]
# ## Denoising score matching
#
# Vincent (2011) learns instead the score of the **noised** law
# $q_\sigma(x) = \mathbb{E}_{X \sim q}\big[\mathcal{N}(x; X, \sigma^2 I)\big]$, whose score
# matching objective equals, up to a constant,
#
# $$
# \mathbb{E}_{X \sim q,\ \varepsilon \sim \mathcal{N}(0, I)}
# \big\| s_\theta(X + \sigma \varepsilon) + \varepsilon / \sigma \big\|^2 ,
# $$
#
# which needs no Jacobian at all ([`losses.dsm_loss`][scorelab.losses.dsm_loss]). The price:
# the model learns $\nabla \log q_\sigma$, not $\nabla \log q$, so its samples follow
# $q_\sigma$. With the tutorial's $\sigma = 1$:

# %%
dsm_loss = functools.partial(losses.dsm_loss, sigma=DSM_SIGMA)
dsm = train(
    key_for("train dsm"),
    MLP(key_for("init dsm"), widths=MLP_WIDTHS, input_scale=data_scale),
    dsm_loss,
    data,
    config,
    progress=False,
)
dsm_value = mean_loss(dsm_loss, exact_score, held_out, "held-out dsm")
print(
    "held-out DSM loss: model {:.3f} ± {:.3f}, exact score {:.3f} ± {:.3f}".format(
        *mean_loss(dsm_loss, dsm.model, held_out, "held-out dsm"), *dsm_value
    )
)
show(viz.loss_curves({"dsm": dsm.losses}, {"dsm": dsm_value[0]}), "loss_dsm")

# %%
out = samplers.sample(key_for("ula dsm"), ula, dsm.model, x_init, trajectory=True)
show(
    viz.animate_trajectories(
        out.trajectory,
        FIGURES / "ula_dsm.gif",
        data[:1000],
        viz.mesh_score(dsm.model, n=25, sigma=DSM_SIGMA),
        frames=ula_frames(ULA_STEPS),
        lim=15,
        title=f"ULA with the DSM model (sigma = {DSM_SIGMA:g})",
    )
)

# %% [markdown]
# The chains settle into modes of $q_1$, visibly wider than the data's. Small $\sigma$ would
# fix that but leaves the score unlearned far from the data, where no noised sample lands;
# large $\sigma$ learns everywhere but blurs. The next section takes all of them.
#
# ## Noise-conditional score networks and annealed Langevin dynamics
#
# Song & Ermon (2019) train **one** network $s_\theta(x, \sigma)$ on a whole ladder of noise
# levels. The founding tutorial's ladder is Karras et al.'s (2022, eq. 5,
# <https://arxiv.org/abs/2206.00364>) with $\rho = 5$,
#
# $$
# \sigma_i = \Big(\sigma_{\min}^{1/\rho} + \tfrac{i}{N-1}\big(\sigma_{\max}^{1/\rho} -
# \sigma_{\min}^{1/\rho}\big)\Big)^\rho, \qquad \sigma_{\min} = 0.02,\ \sigma_{\max} = 10
# $$
#
# ([`noise.karras_sigmas`][scorelab.noise.karras_sigmas]). The sequence of noised laws
# $q_{\sigma_i}$ it defines:

# %%
tutorial_sigmas = noise.karras_sigmas(100)  # ascending, 0.02 ... 10
noised = np.stack(
    [np.asarray(target.ve_marginal(s).sample(key_for("noised"), 500)) for s in tutorial_sigmas]
)
show(
    viz.animate_noised_sequence(
        noised[::-1], np.asarray(tutorial_sigmas)[::-1], FIGURES / "noised.gif", frames=GIF_FRAMES
    )
)

# %% [markdown]
# At $\sigma = 10$ the nine modes are still visible: $q_{10}$ is far from the
# $\mathcal{N}(0, 10^2 I)$ the tutorial starts its samplers from. scorelab's default grid
# therefore goes up to EDM's $\sigma_{\max} = 80$ (geometric,
# [`samplers.default_sigmas`][scorelab.samplers.default_sigmas]); the cost of the tutorial's
# choice is measured [at the end](#what-scorelab-fixes).
#
# The NCSN loss averages denoising score matching over random noise levels with the weight
# $\lambda(\sigma) = \sigma^2$, which makes every level's term $O(1)$:
#
# $$
# \mathcal{L}(\theta) = \mathbb{E}_{\sigma}\, \sigma^2\,
# \mathbb{E}_{X, \varepsilon} \big\| s_\theta(X + \sigma\varepsilon, \sigma)
# + \varepsilon / \sigma \big\|^2
# $$
#
# ([`losses.ncsn_loss`][scorelab.losses.ncsn_loss]; here $\log\sigma$ uniform on
# $[\log 0.02, \log 80]$, two levels per example). The network
# ([`NoiseConditionalMLP`][scorelab.models.NoiseConditionalMLP]) takes
# $[x, \tfrac14 \log \sigma]$ and outputs $-\varepsilon$-like values divided by $\sigma$;
# its weights are averaged (EMA) over training.

# %%
sigma_max = samplers.DEFAULT_SIGMA_MAX
ncsn_loss = functools.partial(
    losses.ncsn_loss, sigma_max=sigma_max, n_sigmas=2, sigma_distribution="loguniform"
)
ncsn_config = TrainConfig(
    steps=NCSN_STEPS,
    learning_rate=LEARNING_RATE,
    batch_size=NCSN_BATCH_SIZE,
    schedule="cosine",
    ema_decay=0.999 if FULL else 0.99,
)
ncsn_result = train(
    key_for("train ncsn"),
    NoiseConditionalMLP(key_for("init ncsn"), widths=NCSN_WIDTHS, sigma_data=data_scale),
    ncsn_loss,
    data,
    ncsn_config,
    progress=False,
)
ncsn = ncsn_result.ema_model
show(viz.loss_curves({"ncsn": ncsn_result.losses}), "loss_ncsn")

# %% [markdown]
# **Annealed Langevin dynamics** (Song & Ermon, 2019, Algorithm 1) runs a few ULA steps on
# each $q_{\sigma_i}$, from the largest level down, with a step that grows like $\sigma^2$:
#
# $$
# x \leftarrow x + \gamma_i\, s_\theta(x, \sigma_i) + \sqrt{2\gamma_i}\, z,
# \qquad \gamma_i = r\, (\sigma_i / \sigma_{\min})^2 .
# $$
#
# The animation shows the chains over the (rescaled) field of the current level
# ([`samplers.annealed_langevin`][scorelab.samplers.annealed_langevin]).

# %%
levels = samplers.default_sigmas(ANNEALED_LEVELS)
annealed = samplers.annealed_langevin(levels, n_steps_per_level=5)
x_init = samplers.ve_prior(key_for("annealed prior"), N_CHAINS, 2, sigma_max)
out = samplers.sample(key_for("annealed"), annealed, ncsn, x_init, trajectory=True)
fields = [viz.mesh_score(ncsn, n=20, sigma=float(s)) for s in levels]
show(
    viz.animate_annealed(
        out.trajectory,
        np.asarray(levels),
        fields,
        FIGURES / "annealed.gif",
        data[:1000],
        levels=GIF_FRAMES,  # levels spread evenly, each shown after its last step
        tail=40,
        lim=15,
    )
)

# %% [markdown]
# Unlike single-level ULA, the chains now choose their modes while the levels are still
# wide enough to move between them, so the mode weights follow the mixture's: the error in
# the mode weights falls below that of ULA driven by the exact score, towards the value a
# set of exact samples of the same size shows:

# %%
x_init = samplers.ve_prior(key_for("annealed prior many"), N_SAMPLES, 2, sigma_max)
x_annealed = samplers.sample(key_for("annealed many"), annealed, ncsn, x_init).x
report = metrics.mixture_report(x_annealed, target)
print(
    f"annealed Langevin, NCSN model: mode-weight TV {report.total_variation:.3f} "
    f"(floor {report_exact.total_variation:.3f}), "
    f"within-mode variance ratio {report.variance_ratio_mean:.2f}"
)

# %% [markdown]
# ## The inference process and DDIM
#
# The noised laws are the marginals of the Markov chain
# $X_t = X_{t-1} + (\sigma_t^2 - \sigma_{t-1}^2)^{1/2} \varepsilon_t$ started at
# $X_0 \sim q$. DDIM (Song, Meng & Ermon, 2021, <https://arxiv.org/abs/2010.02502>) builds a
# backward chain from the **inference distribution**
#
# $$
# q^\eta(x_{t-1} \mid x_t, x_0) = \mathcal{N}\Big(x_0 +
# \frac{\sqrt{\sigma_{t-1}^2 - \eta_{t-1}^2}}{\sigma_t}(x_t - x_0),\ \eta_{t-1}^2 I\Big),
# $$
#
# which keeps every marginal $q(x_t \mid x_0) = \mathcal{N}(x_0, \sigma_t^2 I)$ whatever the
# $\eta$. The choice $\eta_{t-1} = e\,\sqrt{\sigma_t^2 - \sigma_{t-1}^2}\,\sigma_{t-1}/\sigma_t$
# with $e = 1$ is the Bayes posterior of the forward chain; $e = 0$ is deterministic.
# Backward paths of the inference process from $x_0 = 0$ on the tutorial's grid
# ([`samplers.inference_process`][scorelab.samplers.inference_process]):

# %%
key_start, key_bayes, key_other = jax.random.split(key_for("inference process"), 3)
x_T = 10.0 * jax.random.normal(key_start, (1,))
paths = {}
for label, e, key in (("Bayes (e = 1)", 1.0, key_bayes), ("e = 0.1", 0.1, key_other)):
    etas = samplers.ve_ddim_etas(tutorial_sigmas, e)
    path = samplers.inference_process(key, jnp.zeros((1,)), x_T, tutorial_sigmas, etas)
    paths[label] = np.asarray(path.trajectory[:, 0])
show(viz.inference_trajectories(np.asarray(tutorial_sigmas), paths), "inference_process")

# %% [markdown]
# Both paths stay inside the $\pm 3\sigma_t$ band of $q(x_t \mid x_0)$: the marginals are
# right for every $e$; the Bayes path jitters, the $e = 0.1$ path glides.
#
# **DDIM** replaces the unknown $x_0$ by Tweedie's estimate from the score,
# $\hat x_0(x_t) = x_t + \sigma_t^2\, s_\theta(x_t, \sigma_t)$, and starts from
# $\mathcal{N}(0, \sigma_{\max}^2 I)$ ([`samplers.ddim`][scorelab.samplers.ddim]). With
# $e = 0$ each step is exactly an Euler step of the probability-flow ODE
# $dx/d\sigma = -\sigma\, s(x, \sigma)$.

# %%
ddim_grid = samplers.default_sigmas(100)
x_init = samplers.ve_prior(key_for("ddim prior"), N_SAMPLES, 2, sigma_max)
ddim_samples = {
    e: np.asarray(
        samplers.sample(key_for(f"ddim {e}"), samplers.ddim(ddim_grid, eta=e), ncsn, x_init).x
    )
    for e in DDIM_ES
}
show(viz.ddim_samples(ddim_samples, data[:1000], lim=15, title="DDIM, N = 100"), "ddim")

# %% [markdown]
# Deterministic DDIM ($e = 0$) follows the learned field exactly, so wherever the model is
# wrong at small $\sigma$ the samples stay wrong: stragglers between the modes. Injected
# noise ($e \to 1$) lets later steps correct earlier errors.

# %% [markdown]
# ## Sliced Wasserstein against the number of steps
#
# The tutorial's closing study: how close are DDIM's samples to the data as the number of
# levels $N$ grows, for each $e$? The distance is the sliced Wasserstein distance
# ([`metrics.sliced_wasserstein`][scorelab.metrics.sliced_wasserstein], via POT) to fresh exact
# samples. A finite sample never reaches zero, so the plot carries the **floor**: the same
# distance between two independent exact sample sets of the same size
# ([`metrics.floor`][scorelab.metrics.floor]), mean ± one standard deviation over five pairs.

# %%
sw = functools.partial(metrics.sliced_wasserstein, n_projections=SW_PROJECTIONS)
reference = np.asarray(target.sample(key_for("reference"), N_SAMPLES))
floor = metrics.floor(sw, target.sample, key_for("floor"), N_SAMPLES, repeats=5)
sweep = {}
for e in DDIM_ES:
    values = []
    for n_levels in DDIM_NS:
        sampler = samplers.ddim(samplers.default_sigmas(n_levels), eta=e)
        x = samplers.sample(key_for(f"sweep {e} {n_levels}"), sampler, ncsn, x_init).x
        values.append(sw(np.asarray(x), reference))
    sweep[e] = (np.array(DDIM_NS), np.array(values))
    print(f"e = {e:g}: " + ", ".join(f"N={n}: {v:.3f}" for n, v in zip(DDIM_NS, values)))
print(f"floor: {floor[0]:.3f} ± {floor[1]:.3f}")
show(viz.metric_vs_steps(sweep, floor, title="DDIM with the NCSN model"), "sw_vs_n")

# %% [markdown]
# With a handful of levels every $e$ is far from the data. From $N \approx 25$ on the curves
# lie within a few standard deviations of the floor, and at this sample size the differences
# between them are mostly the noise of the estimate (the grey band shows its size; the same
# sampler with another key in the last section lands elsewhere in it). Sliced Wasserstein is
# dominated by the mode weights (masses moved over distances of 10) and nearly blind to the
# spread inside the modes; [`metrics.mixture_report`][scorelab.metrics.mixture_report]
# reads both separately. `scorelab demo` runs this study at the tutorial's sizes beside
# the same sampler driven by the exact score; [Choose a sampler](how-to/choose-sampler.md)
# points to the benchmark sweep of every sampler.
#
# ## A pretrained CelebA-HQ model with DDIM
#
# The tutorial closes with Google's DDPM trained on CelebA-HQ 256×256
# (`google/ddpm-ema-celebahq-256`; Ho, Jain & Abbeel, 2020, <https://arxiv.org/abs/2006.11239>),
# sampled with DDIM in 10 steps through Hugging Face's `diffusers`. That model uses
# **variance-preserving** noise on integer timesteps $t$,
#
# $$
# q(x_t \mid x_0) = \mathcal{N}\big(\sqrt{\bar\alpha_t}\, x_0,\ (1 - \bar\alpha_t) I\big),
# $$
#
# so its prior is $\mathcal{N}(0, I)$, and the network predicts the noise
# $\hat\varepsilon(x_t, t)$ instead of the score ($s = -\hat\varepsilon / \sqrt{1 -
# \bar\alpha_t}$). DDIM's step has the structure of the VE one above, with Tweedie's
# $\hat x_0 = (x_t - \sqrt{1 - \bar\alpha_t}\,\hat\varepsilon) / \sqrt{\bar\alpha_t}$:
#
# $$
# x_{t'} = \sqrt{\bar\alpha_{t'}}\, \hat x_0 + \sqrt{1 - \bar\alpha_{t'} - \eta_t^2}\;
# \hat\varepsilon + \eta_t z, \qquad
# \eta_t = \eta \sqrt{\tfrac{1 - \bar\alpha_{t'}}{1 - \bar\alpha_t}
# \big(1 - \tfrac{\bar\alpha_t}{\bar\alpha_{t'}}\big)} .
# $$
#
# [`scorelab.diffusers`](api/diffusers.md) runs it in JAX without PyTorch: it reads a
# diffusers pipeline folder (U-Net weights and scheduler options, every field and tensor
# checked) and samples with diffusers' conventions, matching `DDIMPipeline` (the tests
# compare them). No download happens at run time, so the real weights must already be on the machine: run
# `hf download google/ddpm-ema-celebahq-256` where there is network (it fills
# the local Hugging Face cache, which scorelab finds by the hub id), or copy the folder and
# point `SCORELAB_PRETRAINED` at it. Without them this section runs on the repository's tiny
# random-weight pipeline (`tests/fixtures/tiny_ddpm`, 16×16): the same code path, with noise
# for pictures.

# %%
from scorelab import diffusers


def find_pipeline() -> str:
    """SCORELAB_PRETRAINED, else the real model if cached, else the repository's tiny one."""
    if os.environ.get("SCORELAB_PRETRAINED"):
        return os.environ["SCORELAB_PRETRAINED"]
    try:
        return str(diffusers.resolve_pipeline("google/ddpm-ema-celebahq-256"))
    except diffusers.PretrainedError:
        here = Path.cwd().resolve()
        for folder in (here, *here.parents):
            if (folder / "tests" / "fixtures" / "tiny_ddpm").is_dir():
                return str(folder / "tests" / "fixtures" / "tiny_ddpm")
        raise


unet, scheduler_config = diffusers.load_pipeline(find_pipeline())
faces = {
    eta: diffusers.to_images(
        diffusers.sample(
            unet, scheduler_config, key_for(f"faces {eta}"), num_inference_steps=10, eta=eta, n=4
        )
    )
    for eta in (1.0, 0.0)
}
# Top row eta = 1, bottom row eta = 0, pixel for pixel.
grid = np.concatenate([faces[1.0], faces[0.0]])
show(viz.save_image_grid(grid, FIGURES / "pretrained.png", ncols=4))

# %% [markdown]
# The same from the command line (see [Load a pretrained diffusers model](how-to/pretrained.md)):
#
# ```bash
# scorelab pretrained google/ddpm-ema-celebahq-256 --steps 10 --eta 1 --n 4 -o faces.png
# ```
#
# ## What scorelab fixes
#
# scorelab reproduces the tutorial's methods and numbers, except where the tutorial has a
# defect. Each is measured here (cheaply) or in the README, with the command that
# reproduces it.
#
# **1. The networks' final leaky ReLU.** The tutorial's networks end in `nn.leaky_relu`,
# which multiplies every negative output component by 0.01: a score pointing left or down
# is shrunk a hundredfold. scorelab's networks end in a linear layer. The same NCSN network
# and budget as above, with the tutorial's final activation added back:


# %%
class LeakyOutput(eqx.Module):
    """The tutorial's output layer: leaky ReLU after the last linear layer, then / sigma.

    `net` is built with scale_by_sigma=False, so without the leaky ReLU this is exactly the
    model above (same weights at initialisation, same key, same data).
    """

    net: NoiseConditionalMLP

    def __call__(self, x, sigma):
        return jax.nn.leaky_relu(self.net(x, sigma)) / sigma


leaky_network = NoiseConditionalMLP(
    key_for("init ncsn"), widths=NCSN_WIDTHS, scale_by_sigma=False, sigma_data=data_scale
)
leaky_result = train(
    key_for("train ncsn"),
    LeakyOutput(leaky_network),
    ncsn_loss,
    data,
    ncsn_config,
    progress=False,
)
ddim_1 = samplers.ddim(ddim_grid, eta=1.0)
compared = {
    "linear output (scorelab)": ncsn,
    "leaky ReLU output (tutorial)": leaky_result.ema_model,
}
rows = {}
for name, model in compared.items():
    x = np.asarray(samplers.sample(key_for("ddim 1.0"), ddim_1, model, x_init).x)
    report = metrics.mixture_report(x, target)
    rows[name] = x
    print(
        f"{name:30s} SW {sw(x, reference):.3f}  mode-weight TV {report.total_variation:.3f}  "
        f"near a mode {report.near_fraction:.3f}"
    )
print(f"{'exact samples':30s} SW {floor[0]:.3f}  mode-weight TV {report_exact.total_variation:.3f}")
show(viz.ddim_samples(rows, data[:1000], lim=15, key_name=None, title="DDIM e = 1"), "leaky")

# %% [markdown]
# **2. $\sigma_{\max} = 10$ is too small for modes at $\pm 10$.** The tutorial starts DDIM
# from $\mathcal{N}(0, 10^2 I)$, but $q_{10}$ still shows the modes (see the noised sequence
# above), so even the **exact** score puts the wrong mass on them, however many steps are
# taken. Measured with the exact score, so that only the prior differs:

# %%
for label, grid in (
    ("tutorial: Karras rho=5, sigma_max=10", noise.karras_sigmas(100)),
    ("scorelab: geometric, sigma_max=80", samplers.default_sigmas(100)),
):
    x_T = samplers.ve_prior(key_for("prior comparison"), N_SAMPLES, 2, grid[-1])
    for e in (0.0, 1.0):
        x = samplers.sample(key_for(f"prior {e}"), samplers.ddim(grid, eta=e), exact_score, x_T).x
        tv = metrics.mixture_report(x, target).total_variation
        print(f"{label:38s} e={e:g}: mode-weight TV {tv:.3f}")
print(f"{'exact samples (one set)':38s}      mode-weight TV {report_exact.total_variation:.3f}")

# %% [markdown]
# **3. Unnormalised mixture weights.** The tutorial passes `uniform(key(42), (9,))` to
# numpyro's `Categorical` as probabilities. Current numpyro rejects them:

# %%
import numpyro.distributions as dist

try:
    dist.Categorical(jax.random.uniform(jax.random.key(42), (9,)))
except ValueError as error:
    print("numpyro:", error)
print("scorelab normalises them: weights sum to", float(target.weights.sum()))

# %% [markdown]
# **4. Key reuse.** The tutorial's `make_ncns_loss` splits its key into `key_uniform,
# key_noise`, then draws $\varepsilon$ from the parent key and never uses `key_noise`; its DDIM
# draws the last step's noise from the key it already split for the steps, and one cell
# draws the initial points and runs the sampler from the same key. With JAX's counter-based
# generator these draws are not detectably correlated, so no number changes; the fix is
# about the contract. In scorelab keys are split into named sub-keys and used once, and
# sample $i$ depends only on `fold_in(key, i)`, so a result does not depend on the batch
# size or the number of devices.
#
# **5. Training the Hyvärinen model.** At the tutorial's learning rate $10^{-4}$ (3000 steps,
# batch 2048) its Hyvärinen model learns nothing: held-out loss $-0.055$ where the exact score
# gives $-9.87$ (README, measured on the tutorial's own code). scorelab trains it at
# $10^{-3}$ with a cosine schedule, and with SiLU hidden activations: with the tutorial's
# leaky ReLU the network reaches a held-out loss of $-4.1$ against the exact score's $-9.98$,
# with SiLU $-9.5$ (2000 steps, batch 512; [`scorelab.models`](api/models.md) module
# docstring). `scorelab train --loss hyvarinen` picks SiLU itself (`model.activation = "auto"`).
#
# **6. Metrics with a floor.** The tutorial reports max-sliced Wasserstein alone. At 2000
# samples its standard deviation is about 0.4 and it is blind to the spread within modes;
# scorelab reports sliced and max-sliced Wasserstein, MMD, energy distance and the mixture
# report, each beside its floor (`scorelab evaluate samples.npy --target seed_mixture`).
