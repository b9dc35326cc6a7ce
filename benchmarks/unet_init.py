"""The first build of a U-Net in a fresh process: its tensors drawn in few programs or one per
shape.

``scorelab.diffusers._unet`` draws each initial tensor as a flat draw of the next power of
four, cut and reshaped (``_drawn``), and transposes concrete weights with NumPy
(``_permuted``): the eager per-tensor draws and transposes compiled one XLA program per tensor
shape. Both cases give the same tensors bit for bit (``tests/test_unet.py``). Each round starts
two fresh Python processes, one per case (``direct``: ``_drawn`` and ``_permuted`` replaced by
the eager ``jax.random`` draw and ``jnp.transpose``), and times building the image demo's
U-Net (``VPEpsilonUNet`` on 1x8x8 digits, channels 8 and 16) and then the image benchmarks' one
(1x16x16, channels 32, 64, 64), with the number of XLA compilations of each.

    python benchmarks/unet_init.py [--quick] [--repeats 3]

``--quick`` builds the demo's network only, in one round.
"""

from __future__ import annotations

import json
import subprocess
import sys

from _harness import median, parse_args, table, write

CHILD = r"""
import json, sys, time
import jax, jax.numpy as jnp
compiles = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, duration, **kw: compiles.append(duration)
    if event == "/jax/core/compile/backend_compile_duration" else None
)
from scorelab.diffusers import VPEpsilonUNet, _unet
if sys.argv[1] == "direct":
    _unet._drawn = lambda draw, key, shape, **bounds: draw(key, shape, jnp.float32, **bounds)
    _unet._permuted = jnp.transpose
out = {}
networks = (("demo 8x8", (1, 8, 8), (8, 16), 4), ("bench 16x16", (1, 16, 16), (32, 64, 64), 8))
for name, shape, channels, groups in networks[: int(sys.argv[2])]:
    before, start = len(compiles), time.perf_counter()
    model = VPEpsilonUNet(jax.random.key(0), shape, channels=channels, norm_groups=groups)
    jax.block_until_ready(jax.tree.leaves(model))
    out[name] = [time.perf_counter() - start, len(compiles) - before]
print(json.dumps(out))
"""


def _build(case: str, networks: int) -> dict[str, list[float]]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, case, str(networks)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], repeats=3)
    runs = {"few programs": [], "direct": []}
    networks = 1 if args.quick else 2  # --quick: the demo's network only
    for _ in range(args.repeats):  # interleaved: one process of each case per round
        runs["few programs"].append(_build("few", networks))
        runs["direct"].append(_build("direct", networks))
    rows, payload = [], {}
    for network in runs["direct"][0]:
        seconds = {case: median([r[network][0] for r in rounds]) for case, rounds in runs.items()}
        compiled = {case: rounds[0][network][1] for case, rounds in runs.items()}
        rows.append(
            [network, f"{seconds['direct']:.2f}", compiled["direct"],
             f"{seconds['few programs']:.2f}", compiled["few programs"],
             f"{seconds['direct'] / seconds['few programs']:.2f}"]
        )  # fmt: skip
        payload[network] = {"seconds": seconds, "compilations": compiled}
    print(
        table(["network", "direct s", "compiles", "few programs s", "compiles", "speed-up"], rows)
    )
    record = {"quick": args.quick, "repeats": args.repeats, "results": payload, "runs": runs}
    write("unet_init", record, args.out)


if __name__ == "__main__":
    main()
