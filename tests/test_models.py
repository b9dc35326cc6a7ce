"""Score models: shapes, the linear output layer, the exact-score oracle wrapper."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _networks import with_moved_norms

from scorelab.models import (
    MLP,
    ConditionalMLP,
    ExactScore,
    NoiseConditionalMLP,
    positional_embedding,
)


def test_mlp_output_is_linear_not_leaky():
    model = MLP(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (256, 2)) * 10
    out = jax.vmap(model)(x)
    assert out.shape == (256, 2)
    # The output equals the last Linear layer applied to the features: no activation after it.
    # The tutorial's leaky ReLU would make negative components 100x smaller than the positives.
    negatives, positives = -out[out < 0], out[out > 0]
    assert negatives.size > 0 and positives.size > 0
    assert float(negatives.mean()) > 0.1 * float(positives.mean())


def test_noise_conditional_mlp_scaling_and_conditioning():
    key = jax.random.key(2)
    scaled = NoiseConditionalMLP(key)
    raw = NoiseConditionalMLP(key, scale_by_sigma=False)
    x = jnp.array([0.3, -1.2])
    for sigma in (0.02, 1.0, 80.0):
        np.testing.assert_allclose(scaled(x, sigma), raw(x, sigma) / sigma, rtol=1e-5)
    # sigma enters through 0.25 log sigma: different levels give different outputs.
    assert not np.allclose(raw(x, 0.1), raw(x, 10.0))
    batched = jax.vmap(scaled)(jnp.ones((4, 2)), jnp.full((4,), 2.0))
    assert batched.shape == (4, 2)


def test_exact_score_wraps_the_noised_target(mixture):
    oracle = ExactScore(mixture)
    x = jnp.array([3.0, -4.0])
    np.testing.assert_allclose(oracle(x, 2.0), mixture.ve_marginal(2.0).score(x), rtol=1e-6)
    np.testing.assert_allclose(oracle(x), mixture.score(x), rtol=1e-6)


def test_input_scaling_is_a_change_of_units_of_the_input():
    key = jax.random.key(3)
    x = jnp.array([8.0, -4.0])
    scaled, plain = MLP(key, input_scale=8.0), MLP(key)
    np.testing.assert_allclose(scaled(x), plain(x / 8.0), rtol=1e-6)
    sigma = 3.0
    preconditioned = NoiseConditionalMLP(key, sigma_data=5.0)
    raw = NoiseConditionalMLP(key)
    c_in = 1.0 / np.sqrt(sigma**2 + 5.0**2)  # Karras et al. (2022), Table 1
    np.testing.assert_allclose(preconditioned(x, sigma), raw(x * c_in, sigma), rtol=1e-5)


def test_layernorm_first_layer_cannot_resolve_radius_without_input_scaling():
    # Why input_scale exists: with |W x| >> |b| the LayerNorm features of x and 2x nearly
    # coincide, so the unscaled network maps far-apart points on a ray to almost the same score.
    key = jax.random.key(4)
    x = jnp.array([30.0, 40.0])
    plain, scaled = MLP(key), MLP(key, input_scale=50.0)
    gap_plain = float(jnp.linalg.norm(plain(x) - plain(2 * x)))
    gap_scaled = float(jnp.linalg.norm(scaled(x) - scaled(2 * x)))
    assert gap_plain < 0.2 * gap_scaled


def test_activation_is_an_argument_and_unknown_names_are_rejected():
    key = jax.random.key(5)
    x = jnp.array([0.4, -0.7])
    leaky, silu = MLP(key), MLP(key, activation="silu")
    # Same weights, different nonlinearity: the hidden features, hence the outputs, differ.
    assert not np.allclose(leaky(x), silu(x))
    with pytest.raises(ValueError, match="activation: unknown value 'relu6'; accepted: leaky"):
        MLP(key, activation="relu6")
    with pytest.raises(ValueError, match="activation: unknown value"):
        NoiseConditionalMLP(key, activation="relu6")
    ncsn = NoiseConditionalMLP(key, activation="silu")
    assert not np.allclose(ncsn(x, 1.0), NoiseConditionalMLP(key)(x, 1.0))


@pytest.mark.slow  # compiles every network
def test_networks_are_the_equinox_layers_they_hold():
    # The networks apply their layers in faster forms (models._dense: x @ W.T + b;
    # models._normed_dense: LayerNorm's centring folded into the weights); value and gradient
    # with respect to every parameter must be those of Equinox's layers applied one by one,
    # as written here independently of the modules' __call__. LayerNorm gains and shifts are
    # moved off their 1/0 start so that every term counts.
    act = jax.nn.leaky_relu

    def mlp_by_layers(m, x, sigma):
        h = x / m.input_scale
        for layer, norm in zip(m.hidden_layers, m.norms):
            h = act(norm(layer(h)))
        return m.output_layer(h)

    def conditional_by_layers(m, x, sigma):
        m = m.network
        first, middle, last = m.layers
        h = jnp.concatenate([x, 0.25 * jnp.log(sigma)[None]])
        h = act(m.norm_out(last(act(middle(act(m.norm_in(first(h))))))))
        return m.output_layer(h) / sigma

    def embedded_by_layers(m, x, sigma):
        # EDM's embedding: sinusoids of c through a two-layer map, added to every hidden
        # layer's pre-activation (before its LayerNorm).
        m = m.network
        c = 0.25 * jnp.log(sigma)
        frequencies = 1e4 ** (-jnp.arange(16) / 15.0)
        e = jnp.concatenate([jnp.cos(c * frequencies), jnp.sin(c * frequencies)])
        for layer in m.embedding_layers:
            e = act(layer(e))
        (first, middle, last), (a_1, a_2, a_3) = m.layers, m.shift_layers
        h = act(m.norm_in(first(x) + a_1(e)))
        h = act(middle(h) + a_2(e))
        h = act(m.norm_out(last(h) + a_3(e)))
        return m.output_layer(h) / sigma

    x = 3.0 * jax.random.normal(jax.random.key(5), (6, 2))
    sigma = jnp.linspace(0.1, 5.0, 6)
    for model, by_layers in (
        (MLP(jax.random.key(3), widths=(16, 32, 8), input_scale=2.0), mlp_by_layers),
        (NoiseConditionalMLP(jax.random.key(4), widths=(16, 32, 8)), conditional_by_layers),
        (
            NoiseConditionalMLP(
                jax.random.key(7), widths=(16, 32, 8), noise_embedding="positional"
            ),
            embedded_by_layers,
        ),
    ):
        model = with_moved_norms(model, jax.random.key(6))

        def loss(m, net):
            return jnp.sum(jnp.sin(jax.vmap(net, (None, 0, 0))(m, x, sigma)))

        got = eqx.filter_value_and_grad(loss)(model, lambda m, x, s: m(x, s))
        want = eqx.filter_value_and_grad(loss)(model, by_layers)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * float(jnp.max(jnp.abs(b))))


def test_positional_embedding_is_edms_sinusoids_and_the_option_is_checked():
    # Karras et al.'s PositionalEmbedding(num_channels=32, endpoint=True) in float64 numpy:
    # frequencies (1/10000)^(i/15), i = 0..15, cosines then sines.
    c = np.array([-0.98, 0.0, 0.37, 1.1])
    frequencies = (1 / 1e4) ** (np.arange(16) / 15)
    for c_i in c:
        want = np.concatenate([np.cos(c_i * frequencies), np.sin(c_i * frequencies)])
        np.testing.assert_allclose(positional_embedding(c_i), want, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="channels: expected an even number"):
        positional_embedding(0.5, channels=7)
    with pytest.raises(ValueError, match="noise_embedding: unknown value 'fourier'; accepted"):
        ConditionalMLP(jax.random.key(0), noise_embedding="fourier")


@pytest.mark.parametrize("cls", [MLP, ConditionalMLP, NoiseConditionalMLP])
@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"dim": -1}, ValueError, "dim: expected an integer >= 1, got -1"),
        ({"dim": 0}, ValueError, "dim: expected an integer >= 1"),
        ({"dim": 2.5}, ValueError, "dim: expected an integer >= 1, got 2.5"),
        ({"widths": ()}, ValueError, r"widths: expected .*integers >= 1.*, got \(\)"),
        ({"widths": 16}, TypeError, "widths: expected a list or tuple of .*got 16"),
        ({"widths": "abc"}, TypeError, "widths: expected a list or tuple"),
        ({"widths": (-4, 8, 8)}, ValueError, "widths: expected an integer >= 1, got -4"),
        ({"widths": (8, 0, 8)}, ValueError, "widths: expected an integer >= 1, got 0"),
        ({"widths": (8, 2.5, 8)}, ValueError, "widths: expected an integer >= 1, got 2.5"),
    ],
)
def test_bad_dim_or_widths_name_the_argument(cls, kwargs, error, message):
    """A bad ``dim`` gave 'math domain error' or an MLIR 'Invalid type', ``widths=()`` an
    IndexError, ``widths=16`` 'no len()', and ``widths=(0,)`` built a network silently."""
    with pytest.raises(error, match=message):
        cls(jax.random.key(0), **kwargs)


def test_conditional_widths_need_three_layers_and_accept_a_list():
    """The conditional body has three hidden layers; a checkpoint's JSON gives widths back as a
    list, which builds the same network as the tuple."""
    for cls in (ConditionalMLP, NoiseConditionalMLP):
        with pytest.raises(ValueError, match=r"widths: expected 3 integers >= 1, got \(8, 8\)"):
            cls(jax.random.key(0), widths=(8, 8))
        a, b = cls(jax.random.key(0), widths=[8, 16, 8]), cls(jax.random.key(0), widths=(8, 16, 8))
        x = jnp.array([0.3, -0.2])
        np.testing.assert_array_equal(a(x, 0.5), b(x, 0.5))
    with pytest.raises(ValueError, match=r"widths: expected an integer >= 1, got 0"):
        MLP(jax.random.key(0), widths=(0,))
    model = MLP(jax.random.key(0), widths=[4, 4])
    assert model(jnp.ones(2)).shape == (2,)


# --- hostile settings, examples and noise levels: each refused naming the argument -----------

_KEY = jax.random.key(0)
_X = jnp.array([1.0, -2.0])


def test_an_integer_example_is_scored_as_floats(mixture):
    """sigma (or c) was cast to x's dtype: 0.5 became 0 for an integer x, giving the clean
    score (ExactScore) or inf (NoiseConditionalMLP)."""
    as_int, as_float = jnp.array([1, 2]), jnp.array([1.0, 2.0])
    exact = ExactScore(mixture)
    np.testing.assert_array_equal(exact(as_int, 0.5), mixture.ve_score(as_float, 0.5))
    models = [
        NoiseConditionalMLP(_KEY, 2, (8, 8, 8)),
        NoiseConditionalMLP(_KEY, 2, (8, 8, 8), sigma_data=1.0),
        ConditionalMLP(_KEY, 2, (8, 8, 8)),
        ConditionalMLP(_KEY, 2, (8, 8, 8), noise_embedding="positional"),
    ]
    for model in models:
        np.testing.assert_array_equal(model(as_int, 0.5), model(as_float, 0.5))
    np.testing.assert_array_equal(MLP(_KEY, 2, (8,))(as_int), MLP(_KEY, 2, (8,))(as_float))


@pytest.mark.parametrize(
    "build, error, argument",
    [
        (lambda: MLP(_KEY, 2, (8,), input_scale=0.0), ValueError, "input_scale"),
        (lambda: MLP(_KEY, 2, (8,), input_scale=-1.0), ValueError, "input_scale"),
        (lambda: MLP(_KEY, 2, (8,), input_scale=float("nan")), ValueError, "input_scale"),
        (lambda: MLP(_KEY, 2, (8,), input_scale="2"), ValueError, "input_scale"),
        (lambda: MLP(_KEY, 2, (8,), input_scale=1e300), ValueError, "input_scale"),
        (lambda: NoiseConditionalMLP(_KEY, sigma_data=0.0), ValueError, "sigma_data"),
        (lambda: NoiseConditionalMLP(_KEY, sigma_data=-1.0), ValueError, "sigma_data"),
        (lambda: NoiseConditionalMLP(_KEY, sigma_data=float("nan")), ValueError, "sigma_data"),
        (lambda: NoiseConditionalMLP(_KEY, scale_by_sigma="no"), TypeError, "scale_by_sigma"),
        (lambda: NoiseConditionalMLP(_KEY, scale_by_sigma=1), TypeError, "scale_by_sigma"),
        (lambda: positional_embedding(0.5, 8, 0.0), ValueError, "max_positions"),
        (lambda: positional_embedding(0.5, 8, -1.0), ValueError, "max_positions"),
        (lambda: positional_embedding(0.5, 8, float("inf")), ValueError, "max_positions"),
        (lambda: positional_embedding(jnp.ones(2), 8), ValueError, "c"),
        (lambda: positional_embedding(0.5j, 8), TypeError, "c"),
        (lambda: MLP(0, 2, (8,)), TypeError, "key"),
        (lambda: ConditionalMLP(3, 2, (8, 8, 8)), TypeError, "key"),
        (lambda: ExactScore("x"), TypeError, "target"),
        (lambda: ExactScore(None), TypeError, "target"),
    ],
)
def test_bad_settings_are_refused_at_construction(build, error, argument):
    """input_scale 0, sigma_data 0 and max_positions 0 made every output NaN."""
    with pytest.raises(error, match=rf"^{argument}: ") as raised:
        build()
    assert "\n" not in str(raised.value)


_NCSN = NoiseConditionalMLP(_KEY, 2, (8, 8, 8))
_BODY = ConditionalMLP(_KEY, 2, (8, 8, 8))


@pytest.mark.parametrize(
    "call, error, argument",
    [
        (lambda m: _NCSN(_X, 0.0), ValueError, "sigma"),  # log(0): NaN
        (lambda m: _NCSN(_X, -1.0), ValueError, "sigma"),
        (lambda m: _NCSN(_X, float("nan")), ValueError, "sigma"),
        (lambda m: _NCSN(_X, 1e30), ValueError, "sigma"),  # sigma**2 overflows float32
        (lambda m: _NCSN(_X, jnp.ones(2)), ValueError, "sigma"),
        (lambda m: _NCSN(_X, 0.5 + 0.5j), TypeError, "sigma"),
        (lambda m: _NCSN(_X, "0.5"), TypeError, "sigma"),
        (lambda m: _NCSN(jnp.ones(3), 0.5), ValueError, "x"),
        (lambda m: _NCSN(_X.astype(jnp.complex64), 0.5), TypeError, "x"),
        (lambda m: _BODY(_X, float("nan")), ValueError, "c"),
        (lambda m: _BODY(_X, jnp.ones(3)), ValueError, "c"),
        (lambda m: _BODY(jnp.ones((4, 2)), 0.5), ValueError, "x"),
        (lambda m: MLP(_KEY, 2, (8,))(jnp.ones(3)), ValueError, "x"),  # a dot_general error
        (lambda m: MLP(_KEY, 2, (8,))(jnp.ones((4, 2))), ValueError, "x"),  # a batch
        (lambda m: ExactScore(m)(_X, jnp.ones(2)), ValueError, "sigma"),  # a reshape error
        (lambda m: ExactScore(m)(_X, -0.5), ValueError, "sigma"),
        (lambda m: ExactScore(m)(_X, float("inf")), ValueError, "sigma"),
        (lambda m: ExactScore(m)(_X, 1e-30), ValueError, "sigma"),  # its square underflows
        (lambda m: ExactScore(m)(_X.astype(jnp.complex64), 0.5), TypeError, "x"),
    ],
)
def test_bad_examples_and_noise_levels_are_refused_at_a_call(mixture, call, error, argument):
    with pytest.raises(error, match=rf"^{argument}: ") as raised:
        call(mixture)
    assert "\n" not in str(raised.value)


def test_noise_levels_are_checked_only_where_concrete_and_shapes_under_jit(mixture):
    """A traced sigma is not value-checked (no host synchronisation in a compiled step);
    shapes are static and still refused under jit."""
    for model in (_NCSN, ExactScore(mixture)):
        compiled = jax.jit(jax.vmap(model))
        assert compiled(jnp.ones((3, 2)), jnp.full(3, 0.5)).shape == (3, 2)
        with pytest.raises(ValueError, match=r"^x: "):
            compiled(jnp.ones((3, 3)), jnp.full(3, 0.5))
    assert ExactScore(mixture)(_X, 0.0).shape == (2,)  # sigma = 0: the clean score
    np.testing.assert_array_equal(ExactScore(mixture)([1.0, -2.0], 0.5), mixture.ve_score(_X, 0.5))


def test_sizes_beyond_the_memory_are_refused_before_allocating():
    """``MLP(dim=10**12)`` returned a model whose weights failed to allocate 16 TB later, and
    ``positional_embedding(channels=10**12)`` tried 2 TB (pass 19A, #5)."""
    from scorelab.models import MLP, positional_embedding

    with pytest.raises(ValueError, match=r"^dim: needs .* of memory"):
        MLP(jax.random.key(0), dim=10**12, widths=(4,))
    with pytest.raises(ValueError, match=r"^widths: needs .* of memory"):
        MLP(jax.random.key(0), dim=2, widths=(10**7, 10**7))
    with pytest.raises(ValueError, match=r"^channels: needs .* of memory"):
        positional_embedding(0.5, channels=10**12)
