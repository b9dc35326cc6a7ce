"""Helpers shared by the tests that compare the bundled networks with rewritten forms."""

import equinox as eqx
import jax


def _is_norm(node) -> bool:
    return isinstance(node, eqx.nn.LayerNorm)


def with_moved_norms(model, key):
    """``model`` with every LayerNorm gain and shift moved off its 1/0 start by 0.3 N(0, 1), so
    that a rewritten network's terms in them count in value and gradient."""

    def leaves(m):
        return [
            leaf
            for n in jax.tree.leaves(m, is_leaf=_is_norm)
            if _is_norm(n)
            for leaf in (n.weight, n.bias)
        ]

    keys = jax.random.split(key, len(leaves(model)))
    moved = [leaf + 0.3 * jax.random.normal(k, leaf.shape) for k, leaf in zip(keys, leaves(model))]
    return eqx.tree_at(leaves, model, moved)
