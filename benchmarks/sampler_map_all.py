"""The sampler map, second edition, for every sampler of ``scorelab.samplers.SAMPLERS``.

Runs :func:`scorelab.sweep.sweep` (the one driver of ``scorelab sweep``) once per
(grid, sampler, score) at equal NFE budgets, with the exact score of the tutorial's mixture
and, with ``--model``, a trained noise-conditional model, appending each sweep's rows to one
JSON file as it finishes (a long run loses nothing; a rerun skips the (grid, sampler, score,
budget) cells already there). A seed's x_T and noise do not depend on the score, so model rows
added later share the exact rows' random numbers; the model's fingerprint is recorded, and
another model's rows are refused. The floors are measured once, at the start, and passed to
every sweep (``known_floors``). ``--report`` reads the JSON back and prints, per grid, the
fewest NFE from which each sampler stays within 1.5x the floor on every metric
(``scorelab.sweep.fewest_nfe(..., "all")``: SW, MMD², mode-weight TV, and the within-mode
variance ratio in [0.85, 1.2]) and draws the map: for each sampler and budget, the worst of
the criteria as a multiple of its bound; with model rows, it also prints exact and model side
by side at each sampler's largest budget.

    python benchmarks/sampler_map_all.py --out benchmarks/results/sampler_map_all.json
    python benchmarks/sampler_map_all.py --out benchmarks/results/sampler_map_all.json \
        --report --figure docs/images/sampler_map_all.png

ULA and MALA sample one noise level (no grid); ``ddim`` is ``euler`` (eta 0) and ``ancestral``
(eta 1) exactly (tested), so it has no row of its own.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import equinox as eqx
import jax
import numpy as np

from scorelab.models import ExactScore
from scorelab.report import floors
from scorelab.runs import write_json
from scorelab.sweep import METRICS, VAR_RATIO_BAND, SweepResult, fewest_nfe, sweep, sweep_sampler
from scorelab.targets import seed_mixture

STOCHASTIC = (
    ("euler_maruyama", {}),
    ("ancestral", {}),
    ("predictor_corrector", {}),
    # gamma = r (sigma / sigma_min)^2 is stable only for r < 2 sigma_min^2 = 8e-6 here.
    ("annealed_langevin", {"step_ratio": 2e-6}),
    ("edm", {}),
    ("euler_churn", {"s_churn": 40.0}),
    ("dpm_2_ancestral", {}),
    ("dpmpp_2s_ancestral", {}),
    ("dpmpp_sde", {}),
    ("dpmpp_2m_sde", {}),
    ("dpmpp_3m_sde", {}),
    ("restart", {}),
)
DETERMINISTIC = (
    ("euler", {}),
    ("heun", {}),
    ("dpm_2", {}),
    ("dpmpp_2m", {}),
    ("dpmpp_3m", {}),
    ("unipc", {"order": 2}),
    ("unipc", {"order": 3}),
    ("deis", {"order": 2}),
    ("deis", {"order": 3}),
    ("ipndm", {}),
    ("lms", {}),
    ("dpm_solver", {"order": 2}),
    ("dpm_solver", {"order": 3}),
)
ADAPTIVE = (
    ("tsit5", {"rtol": 1e-2, "atol": 1e-2}),
    ("tsit5", {"rtol": 1e-3, "atol": 1e-3}),
    ("dopri5", {"rtol": 1e-3, "atol": 1e-3}),
    # k-diffusion's default (0.05, 0.0078) and tighter and looser pairs.
    ("dpm_adaptive", {"rtol": 0.2, "atol": 0.05}),
    ("dpm_adaptive", {"rtol": 0.05, "atol": 0.0078}),
    ("dpm_adaptive", {"rtol": 0.01, "atol": 0.002}),
    ("dpm_adaptive", {"rtol": 0.002, "atol": 0.0005}),
)
KINDS = {"stochastic": STOCHASTIC, "deterministic": DETERMINISTIC, "adaptive": ADAPTIVE}
GRIDS = {
    "karras": ("karras", 0.002, 80.0, 7.0),
    "ays": ("ays:seed_mixture_10", 0.002, 80.0, 7.0),
    "polyexponential": ("polyexponential", 0.002, 80.0, 1.0),
    "karras_0.02": ("karras", 0.02, 80.0, 7.0),  # the NCSN model's training range
}


def _load(path: Path) -> dict:
    """The map so far; JSON's ``null`` (a NaN metric, e.g. a variance ratio with an empty mode)
    back to NaN."""
    if not path.exists():
        return {"floors": None, "rows": []}
    payload = json.loads(path.read_text())
    for row in payload["rows"]:
        row.update({k: float("nan") for k, v in row.items() if v is None and k != "levels"})
    return payload


def run(args) -> None:
    target = seed_mixture()
    seeds = tuple(int(s) for s in args.seeds.split(","))
    payload = _load(args.out)
    settings = {"n_samples": args.n, "seeds": list(seeds), "n_projections": args.projections}
    if payload["floors"] is None:
        key_floor = jax.random.fold_in(jax.random.key(max(seeds) + 1), 0)
        payload["floors"] = floors(METRICS, target.sample, key_floor, args.n, 5, target=target,
                                   n_projections=args.projections)  # fmt: skip
        payload["settings"] = settings
        write_json(args.out, payload)
    elif payload["settings"] != settings:
        raise SystemExit(f"{args.out} holds a map with {payload['settings']}; use another --out")
    score_fns = {"exact": ExactScore(target)}
    if args.model:
        from scorelab.sweep import load_score_model

        score_fns["model"] = load_score_model(args.model)
        model = {"path": args.model, "sha256": _fingerprint(score_fns["model"])}
        if payload.setdefault("model", model)["sha256"] != model["sha256"]:
            raise SystemExit(f"{args.out} holds rows of another model ({payload['model']}); "
                             "use another --out")  # fmt: skip
    budgets = [int(b) for b in args.nfe.split(",")]
    start = time.time()
    for grid_label in args.grids.split(","):
        grid, sigma_min, sigma_max, rho = GRIDS[grid_label]
        for kind in args.kinds.split(","):
            for name, options in KINDS[kind]:
                spec = sweep_sampler(name, **options)
                if args.only and spec.label not in args.only.split(";"):
                    continue
                # One sweep per score: the chains' keys are the seed's alone (common random
                # numbers), so a model's rows added later share the exact rows' x_T and noise.
                for score, score_fn in score_fns.items():
                    have = {r["levels"] for r in payload["rows"] if r["grid"] == grid_label
                            and r["sampler"] == spec.label and r["score"] == score}  # fmt: skip
                    if spec.levels is None:  # adaptive: one row set, at the NFE it spends
                        todo = [] if have else [1]
                    else:
                        todo = [b for b in budgets if spec.levels(b) not in have]
                    if not todo:
                        continue
                    result = sweep(target, [spec], todo, {score: score_fn}, n_samples=args.n,
                                   seeds=seeds, grid=grid, sigma_min=sigma_min,
                                   sigma_max=sigma_max, rho=rho, n_projections=args.projections,
                                   known_floors=payload["floors"])  # fmt: skip
                    for row in result.rows:
                        row.update(grid=grid_label, kind=kind)
                    payload["rows"] += result.rows
                    write_json(args.out, payload)
                    print(f"{time.time() - start:6.0f}s {grid_label} {spec.label} {score}: "
                          + ", ".join(f"{r['nfe']:.4g}:{r['tv']:.3f}/{r['var_ratio']:.2f}"
                                      for r in result.rows if r["seed"] == seeds[0]),
                          flush=True)  # fmt: skip


def _fingerprint(model) -> str:
    """SHA-256 of a model's array leaves: which trained model a map's ``model`` rows are of."""
    digest = hashlib.sha256()
    for leaf in jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_array)):
        digest.update(np.asarray(leaf).tobytes())
    return digest.hexdigest()


def _bounds(floor: dict) -> dict[str, float]:
    return {name: floor[name][0] + 1.5 * floor[name][1] if name == "mmd2" else 1.5 * floor[name][0]
            for name in METRICS}  # fmt: skip


def worst_ratio(row: dict, bounds: dict[str, float]) -> float:
    """The worst criterion of a (seed-mean) row as a multiple of its bound (<= 1 passes).

    SW and TV: metric / bound; MMD²: metric / bound (bound > 0); the variance ratio v: v / 1.2
    above the band, 0.85 / v below it, else 0.
    """
    low, high = VAR_RATIO_BAND
    v = row["var_ratio"]
    var = v / high if v > high else (low / v if v < low else 0.0)
    return max(var, *(row[name] / bound for name, bound in bounds.items()))


def report(args) -> None:
    from scorelab import viz
    from scorelab.sweep import mean_rows

    payload = _load(args.out)
    bounds = _bounds(payload["floors"])
    grids = [g for g in GRIDS if any(r["grid"] == g for r in payload["rows"])]
    scores = sorted({r["score"] for r in payload["rows"]})
    tables = {}
    for grid in grids:
        rows = [r for r in payload["rows"] if r["grid"] == grid]
        result = SweepResult(rows, payload["floors"], payload["settings"])
        tables[grid] = {metric: fewest_nfe(result, metric) for metric in ("tv", "all")}
        tables[grid]["means"] = mean_rows(rows)
    labels = []
    for kind in ("deterministic", "stochastic", "adaptive"):
        for name, options in KINDS[kind]:
            label = sweep_sampler(name, **options).label
            if any(r["sampler"] == label for r in payload["rows"]):
                labels.append((kind, label))
    print("floors:", json.dumps(payload["floors"]), "bounds:", json.dumps(bounds))
    columns = [(g, s) for g in grids for s in scores
               if any(r["grid"] == g and r["score"] == s for r in payload["rows"])]  # fmt: skip
    print("\n| sampler | kind | " + " | ".join(f"{g} ({s})" for g, s in columns) + " |")
    print("|---|---|" + "---|" * len(columns))
    for kind, label in labels:
        cells = []
        for grid, score in columns:
            all_ = tables[grid]["all"].get((label, score), "")
            cells.append("-" if all_ == "" else ("none" if all_ is None else f"{all_:g}"))
        print(f"| {label} | {kind} | " + " | ".join(cells) + " |")
    if "model" in scores:
        _model_table(tables, labels, grids, bounds)
    if args.figure:
        budgets = [int(b) for b in args.nfe.split(",")]
        fig = _map_figure(tables, labels, columns, bounds, budgets)
        viz.save_figure(fig, args.figure)
        print(args.figure)


def _model_table(tables, labels, grids, bounds) -> None:
    """Exact and model side by side at each sampler's largest budget (seed means), and the
    criteria of "all" the model fails there: where the model, not the sampler, is the limit."""
    low, high = VAR_RATIO_BAND
    print("\n| sampler | grid | NFE exact / model | exact: SW / MMD² / TV / var ratio / far | "
          "model: SW / MMD² / TV / var ratio / far | model fails |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for grid in grids:
        for _, label in labels:
            last = {}
            for row in (r for r in tables[grid]["means"] if r["sampler"] == label):
                if row["nfe"] >= last.get(row["score"], row)["nfe"]:
                    last[row["score"]] = row
            if set(last) != {"exact", "model"}:
                continue
            cells = [f"{r['sw']:.2f} / {r['mmd2']:.1e} / {r['tv']:.3f} / {r['var_ratio']:.2f} / "
                     f"{100 * r['far']:.1f}%" for r in (last["exact"], last["model"])]  # fmt: skip
            model = last["model"]
            fails = [name for name, bound in bounds.items() if not model[name] <= bound]
            fails += [] if low <= model["var_ratio"] <= high else ["var ratio"]
            print(f"| {label} | {grid} | {last['exact']['nfe']:.4g} / {model['nfe']:.4g} | "
                  f"{cells[0]} | {cells[1]} | {', '.join(fails) or '-'} |")  # fmt: skip


def _map_figure(tables, labels, columns, bounds, budgets):
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    size = (4.2 * len(columns), 0.32 * len(labels) + 1.6)
    fig, axes = plt.subplots(1, len(columns), figsize=size,
                             sharey=True, squeeze=False)  # fmt: skip
    for ax, (grid, score) in zip(axes[0], columns, strict=True):
        means = [r for r in tables[grid]["means"] if r["score"] == score]
        image = np.full((len(labels), len(budgets) + 1), np.nan)
        for i, (_, label) in enumerate(labels):
            for r in (r for r in means if r["sampler"] == label):
                if r["levels"] is None:  # adaptive: its own NFE in the last column
                    image[i, -1] = worst_ratio(r, bounds)
                    ax.text(len(budgets), i, f"{float(r['nfe']):.0f}", ha="center", va="center",
                            fontsize=6)  # fmt: skip
                else:  # the budget column: the smallest budget that buys this grid
                    column = next(j for j, b in enumerate(budgets) if r["nfe"] <= b)
                    image[i, column] = worst_ratio(r, bounds)
        shown = ax.imshow(image, cmap="RdYlGn_r", norm=LogNorm(0.25, 4.0), aspect="auto")
        ax.set_xticks(range(len(budgets) + 1), [*map(str, budgets), "adaptive"], fontsize=7)
        ax.set_title(f"{grid}, {score} score", fontsize=9)
        ax.set_xlabel("NFE budget (score evaluations per sample)", fontsize=8)
    axes[0][0].set_yticks(range(len(labels)), [label for _, label in labels], fontsize=7)
    fig.colorbar(shown, ax=axes[0].tolist(), label="worst criterion / its bound (<= 1 passes)")
    return fig


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/sampler_map_all.json"))
    parser.add_argument("--n", type=int, default=2000, help="samples per run and floor set")
    parser.add_argument("--seeds", default="0,1", help="comma list")
    parser.add_argument("--projections", type=int, default=100, help="SW directions")
    parser.add_argument("--nfe", default="5,10,15,20,30,50",
                        help="comma list of budgets (--report: the figure's columns)")  # fmt: skip
    parser.add_argument("--grids", default="karras,ays", help=f"comma list of {', '.join(GRIDS)}")
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma list")
    parser.add_argument("--only", help="semicolon list of sampler labels, e.g. 'heun;edm'")
    parser.add_argument("--model", help="a saved noise-conditional model: adds 'model' rows")
    parser.add_argument("--report", action="store_true", help="print the tables, run nothing")
    parser.add_argument("--figure", type=Path, help="with --report: the map's PNG")
    args = parser.parse_args()
    report(args) if args.report else run(args)


if __name__ == "__main__":
    main()
