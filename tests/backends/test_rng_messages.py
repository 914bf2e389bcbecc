"""``rng=`` errors: each lists every type its framework takes (each of which is then accepted)
and says what it received; a traced int under ``jax.jit`` asks for a key."""

import re

import numpy as np
import pytest

import diffopt
from diffopt.backends._rng import accepted_rng_types

#: Each framework's own accepted types, as its message must list them (beyond the common ones).
OWN = {
    "numpy": [],
    "autograd": [],
    "torch": ["a torch.Generator"],
    "jax": ["a key from jax.random.key (or jax.random.PRNGKey)"],
    "tensorflow": ["a tf.random.Generator", "an integer seed tensor of shape [2]"],
    "cupy": ["a cupy.random.Generator"],
}
COMMON = ["None", "an int seed in [0, 2**63)", "a numpy.random.Generator or RandomState",
          "an Rng from diffopt.make_rng"]


def _examples(name, like):
    """Listed type -> objects of it."""
    out = {"None": [None], "an int seed in [0, 2**63)": [0, 7, 2**63 - 1],
           "a numpy.random.Generator or RandomState": [np.random.default_rng(0), np.random.RandomState(0)]}
    if name == "torch":
        import torch

        out["a torch.Generator"] = [torch.Generator().manual_seed(1)]
    elif name == "jax":
        import jax

        out["a key from jax.random.key (or jax.random.PRNGKey)"] = [jax.random.key(1), jax.random.PRNGKey(1)]
    elif name == "tensorflow":
        import tensorflow as tf

        out["a tf.random.Generator"] = [tf.random.Generator.from_seed(1)]
        out["an integer seed tensor of shape [2]"] = [tf.constant([1, 2]), tf.constant([1, 2], tf.int64)]
    elif name == "cupy":
        import cupy

        out["a cupy.random.Generator"] = [cupy.random.default_rng(1)]
    out["an Rng from diffopt.make_rng"] = [diffopt.make_rng(3, like)]
    return out


def _message(name):
    # the shims of numpy and autograd are one (NumPy arrays): its messages say "numpy arrays"
    return "numpy" if name == "autograd" else name


def test_every_listed_type_is_accepted(backend):
    like = backend.asarray(np.zeros(3), "float32")
    listed = accepted_rng_types(_message(backend.name))
    assert list(listed) == COMMON[:3] + OWN[backend.name] + COMMON[3:]
    examples = _examples(backend.name, like)
    assert set(examples) == set(listed)
    for rng in [obj for objs in examples.values() for obj in objs]:
        draws = backend.to_numpy(diffopt.Normal().sample((4,), like, rng=rng))
        assert draws.shape == (4,) and np.all(np.isfinite(draws)), rng


@pytest.mark.parametrize("bad, received, why", [
    ("seed", "got str 'seed'", ""),
    (1.5, "got float 1.5", ": a seed is an int, not a float"),
    (True, "got bool True", ": a bool is not a seed"),
    (object(), "got object", ""),
])
def test_message_lists_every_accepted_type_and_what_was_received(backend, bad, received, why):
    like = backend.asarray(np.zeros(3), "float32")
    with pytest.raises(TypeError) as info:
        diffopt.make_rng(bad, like)
    message = str(info.value)
    assert message.startswith(f"rng for {_message(backend.name)} arrays must be None, ")
    for accepted in COMMON + OWN[backend.name]:
        assert accepted in message, (accepted, message)
    assert message.endswith(received + why), message


def test_an_integer_array_is_not_a_seed(backend):
    like = backend.asarray(np.zeros(3), "float32")
    with pytest.raises(TypeError, match=r"of dtype (torch\.)?int32 and shape \(\): an integer array is not a seed, "
                                        r"pass a Python int$"):
        diffopt.make_rng(backend.asarray(np.array(3), "int32"), like)


def test_torch_with_a_jax_key_names_torch_generator_and_the_jax_key():
    torch = pytest.importorskip("torch")
    jax = pytest.importorskip("jax")
    with pytest.raises(TypeError, match=re.escape("a numpy.random.Generator or RandomState, a torch.Generator or "
                                                  "an Rng from diffopt.make_rng; got jax")) as info:
        diffopt.Normal().sample((2,), torch.zeros(2), rng=jax.random.key(0))
    assert str(info.value).endswith(": a jax generator or key seeds only jax arrays"), info.value


def test_a_traced_int_under_jax_jit_asks_for_a_key():
    jax = pytest.importorskip("jax")
    pert = diffopt.perturbed(diffopt.argmax_one_hot, num_samples=4, sigma=0.5)
    x = jax.numpy.array([[0.1, 0.7, 0.2]])
    with pytest.raises(TypeError, match=r"rng is a traced value \(int32\[\] under jax\.jit .*pass a key, "
                                        r"rng=jax\.random\.key\(seed\)"):
        jax.jit(lambda t, seed: pert(t, rng=seed))(x, 3)
    # what the message says works: a key as the traced argument, or a Python int that is not traced
    by_key = jax.jit(lambda t, key: pert(t, rng=key))(x, jax.random.key(3))
    by_int = jax.jit(lambda t: pert(t, rng=3))(x)
    assert np.asarray(by_key).shape == np.asarray(by_int).shape == (1, 3)
