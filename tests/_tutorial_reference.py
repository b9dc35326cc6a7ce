"""An independent float64 NumPy transcription of the founding tutorial's DDIM cells.

Written line by line from the tutorial (``make_ddim_sampler``, ``ddim_sampling``,
``inference_process``, ``inference_process_sampling``) with Python loops instead of
``lax.scan`` and injected standard normal draws instead of keys, plus a closed-form
Gaussian-mixture score that shares no code with :mod:`scorelab.targets` (no numpyro, no
autodiff). Used by the tests to check scorelab's samplers step for step.
"""

import numpy as np


def tutorial_sigmas(n, p=5.0, std_min=0.02, std_max=10.0):
    """The tutorial's ``stds`` (ascending), as written in ``make_ddim_sampler``."""
    return (
        std_max ** (1 / p) + np.linspace(1, 0, n) * (std_min ** (1 / p) - std_max ** (1 / p))
    ) ** p


def tutorial_ddim_etas(stds, eps, eta_0=0.0):
    """``make_ddim_sampler``'s etas, ``(N,)``: ``[eta_0, clipped Bayes etas * eps]``."""
    etas = np.clip(
        ((stds[1:] ** 2 - stds[:-1] ** 2) ** 0.5) * (stds[:-1] / stds[1:]) * eps,
        0,
        stds[:-1] - 1e-8,
    )
    return np.concatenate((np.array([eta_0]), etas), axis=0)


def tutorial_inference_etas(stds, eps):
    """``make_inference_process_sampler``'s etas, ``(N - 1,)``, unclipped."""
    return ((stds[1:] ** 2 - stds[:-1] ** 2) ** 0.5) * (stds[:-1] / stds[1:]) * eps


def inference_process(x_0, x_t, sigma_t, sigma_t_1, eta_t_1):
    """The tutorial's mean of q(x_{t-1} | x_t, x_0)."""
    eps = x_t - x_0
    coeff_eps = ((sigma_t_1**2 - eta_t_1**2) / (sigma_t**2)) ** 0.5
    return x_0 + coeff_eps * eps


def inference_process_sampling(x_T, noise, x_0, etas, sigmas):
    """The tutorial's ``inference_process_sampling``; ``noise[j]`` replaces its j-th draw.

    ``etas`` has the tutorial's ``(N - 1,)`` layout. Returns the ``(N - 1, d)`` trajectory.
    """
    x_t, trajectory = x_T, []
    steps = zip(etas[::-1], sigmas[1:][::-1], sigmas[:-1][::-1], strict=True)
    for j, (eta_t_1, sig_t, sig_t_1) in enumerate(steps):
        x_t_1 = inference_process(x_0, x_t, sig_t, sig_t_1, eta_t_1)
        x_t = x_t_1 + eta_t_1 * noise[j]
        trajectory.append(x_t)
    return np.stack(trajectory)


def ddim_sampling(x_T, noise, etas, sigmas, score_net):
    """The tutorial's ``ddim_sampling``; ``noise[j]`` replaces its j-th draw.

    ``noise`` is ``(N, d)``; its last row is the final step's draw, for which the tutorial
    reuses its parent key. Returns the ``(N, d)`` trajectory, the final sample last.
    """
    x_t, trajectory = x_T, []
    steps = zip(etas[1:][::-1], sigmas[1:][::-1], sigmas[:-1][::-1], strict=True)
    for j, (eta_t_1, sig_t, sig_t_1) in enumerate(steps):
        pred_x_0 = x_t + (sig_t**2) * score_net(x_t, sig_t)
        x_t_1 = inference_process(pred_x_0, x_t, sig_t, sig_t_1, eta_t_1)
        x_t = x_t_1 + eta_t_1 * noise[j]
        trajectory.append(x_t)
    x_0 = x_t + (sigmas[0] ** 2) * score_net(x_t, sigmas[0])
    x_0 = x_0 + etas[0] * noise[-1]
    trajectory.append(x_0)
    return np.stack(trajectory)


def mixture_ve_score(means, covariances, weights):
    """Closed-form score of ``sum_k w_k N(mu_k, C_k + sigma^2 I)`` at one point, float64.

    ``grad log q = sum_k r_k(x) P_k (mu_k - x)`` with ``P_k = (C_k + sigma^2 I)^-1`` and
    responsibilities ``r_k`` from a log-sum-exp of the component log-densities.
    """
    means = np.asarray(means, np.float64)
    covariances = np.asarray(covariances, np.float64)
    log_weights = np.log(np.asarray(weights, np.float64))
    eye = np.eye(means.shape[1])

    def score(x, sigma):
        precisions = np.linalg.inv(covariances + sigma**2 * eye)
        diff = means - x
        pulls = np.einsum("kij,kj->ki", precisions, diff)
        log_dets = np.linalg.slogdet(covariances + sigma**2 * eye)[1]
        logits = log_weights - 0.5 * np.einsum("ki,ki->k", diff, pulls) - 0.5 * log_dets
        r = np.exp(logits - logits.max())
        return (r / r.sum()) @ pulls

    return score


def sequential_ula(
    x_init, noise, stds_sequence, n_iter_per_timestep, score_fun, learning_rate_ratio
):
    """The tutorial's ``sequential_ula`` for one chain; ``noise[j]`` replaces its j-th draw.

    ``stds_sequence`` is descending (the tutorial passes ``stds[::-1]``); the step on level
    ``std`` is ``learning_rate_ratio * (std / stds_sequence[-1]) ** 2``. Returns the
    ``(levels * n_iter_per_timestep, d)`` trajectory.
    """
    x, trajectory, j = x_init, [], 0
    learning_rates = learning_rate_ratio * (stds_sequence / stds_sequence[-1]) ** 2
    for lr, std in zip(learning_rates, stds_sequence, strict=True):
        for _ in range(n_iter_per_timestep):
            # The tutorial's `ula` kernel.
            x = x + lr * score_fun(x, std) + ((2 * lr) ** 0.5) * noise[j]
            trajectory.append(x)
            j += 1
    return np.stack(trajectory)
