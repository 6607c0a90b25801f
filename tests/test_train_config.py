"""Hostile input to `TrainConfig` (issue 9.6), driven by hypothesis: every wrong value
fails at construction with an error naming the field, whichever way the config is made;
every valid value is kept as given."""
import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qnnlib.training import TrainConfig

SIZE_FIELDS = ["epochs", "batch_size", "n_train", "n_val", "n_test", "threads"]
LR_FIELDS = ["lr_start", "lr_end"]
BOOL_FIELDS = ["glorot_scaling", "clip_weights", "progress", "cuda_graph"]
EXAMPLES = settings(max_examples=100, deadline=None)

not_integers = st.one_of(st.floats(allow_nan=True), st.text(max_size=5), st.booleans(),
                         st.lists(st.integers(), max_size=2), st.just(b"1"))
not_numbers = st.one_of(st.text(max_size=6), st.booleans(), st.lists(st.floats(), max_size=2),
                        st.none(), st.just(b"1"), st.complex_numbers())


def build(how: str, **values):
    """The three ways a config is made: directly, from a dict, by dataclasses.replace."""
    if how == "direct":
        return TrainConfig(**values)
    if how == "from_dict":
        return TrainConfig.from_dict(values)
    return dataclasses.replace(TrainConfig(), **values)


HOW = st.sampled_from(["direct", "from_dict", "replace"])


@EXAMPLES
@given(field=st.sampled_from(SIZE_FIELDS + ["seed"]), value=not_integers, how=HOW)
def test_sizes_and_seed_of_the_wrong_type(field, value, how):
    with pytest.raises(TypeError, match=f"{field} must be an integer, got"):
        build(how, **{field: value})


@EXAMPLES
@given(field=st.sampled_from(SIZE_FIELDS), value=st.integers(max_value=0), how=HOW)
def test_sizes_below_one(field, value, how):
    with pytest.raises(ValueError, match=f"{field} must be >= 1, got {value}"):
        build(how, **{field: value})


@EXAMPLES
@given(value=st.one_of(st.integers(max_value=-1), st.integers(min_value=2**63)), how=HOW)
def test_seed_out_of_range(value, how):
    with pytest.raises(ValueError, match="seed must be"):
        build(how, seed=value)


@EXAMPLES
@given(field=st.sampled_from(LR_FIELDS), value=not_numbers, how=HOW)
def test_learning_rates_of_the_wrong_type(field, value, how):
    with pytest.raises(TypeError, match=f"{field} must be a number, got"):
        build(how, **{field: value})


@EXAMPLES
@given(field=st.sampled_from(LR_FIELDS), how=HOW,
       value=st.one_of(st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0]),
                       st.floats(max_value=0.0), st.integers(max_value=0)))
def test_learning_rates_nan_inf_or_not_positive(field, value, how):
    with pytest.raises(ValueError, match=f"{field} must be a finite number > 0"):
        build(how, **{field: value})


@EXAMPLES
@given(field=st.sampled_from(BOOL_FIELDS), how=HOW,
       value=st.one_of(st.integers(), st.text(max_size=5), st.none(), st.floats()))
def test_switches_that_are_not_booleans(field, value, how):
    with pytest.raises(TypeError, match=f"{field} must be true or false"):
        build(how, **{field: value})


@EXAMPLES
@given(value=st.one_of(st.text(max_size=12).filter(lambda s: s not in ("squared_hinge", "cross_entropy")),
                       st.integers(), st.none()), how=HOW)
def test_unknown_loss(value, how):
    with pytest.raises(ValueError, match="loss must be one of"):
        build(how, loss=value)


@EXAMPLES
@given(value=st.text(alphabet="abcxyz:-0123456789 ", min_size=1, max_size=10), how=HOW)
def test_device_strings_torch_does_not_know(value, how):
    if value in ("auto", "cpu"):
        return
    with pytest.raises(ValueError, match="device must be 'auto', 'cpu' or 'cuda\\[:N\\]'"):
        build(how, device=value)


@EXAMPLES
@given(value=st.one_of(st.integers(), st.none(), st.floats(), st.lists(st.text(), max_size=2)),
       how=HOW)
def test_device_of_the_wrong_type(value, how):
    with pytest.raises(TypeError, match="device must be a string"):
        build(how, device=value)


@EXAMPLES
@given(batch=st.integers(min_value=2, max_value=10_000), data=st.data(), how=HOW)
def test_fewer_training_examples_than_a_batch(batch, data, how):
    n_train = data.draw(st.integers(min_value=1, max_value=batch - 1))
    with pytest.raises(ValueError, match=f"n_train={n_train} is smaller than batch_size={batch}"):
        build(how, n_train=n_train, batch_size=batch)


@EXAMPLES
@given(key=st.text(min_size=1, max_size=12).filter(
    lambda k: k not in {f.name for f in dataclasses.fields(TrainConfig)}))
def test_unknown_keys_from_a_dict(key):
    with pytest.raises(ValueError, match="unknown TrainConfig keys"):
        TrainConfig.from_dict({key: 1})


@EXAMPLES
@given(epochs=st.integers(1, 10**6), batch=st.integers(1, 1000), seed=st.integers(0, 2**63 - 1),
       lr=st.floats(min_value=1e-12, max_value=10.0), how=HOW)
def test_valid_values_are_kept_as_given(epochs, batch, seed, lr, how):
    config = build(how, epochs=epochs, batch_size=batch, seed=seed, lr_start=lr, lr_end=lr / 2)
    assert (config.epochs, config.batch_size, config.seed, config.lr_start) == (epochs, batch, seed, lr)


def test_numpy_numbers_become_python_numbers():
    """params may come through numpy (e.g. a grid built with np.arange): stored as python
    numbers so metrics and checkpoints stay plain JSON / weights-only values."""
    config = TrainConfig(epochs=np.int64(3), lr_start=np.float32(0.5), threads=np.int32(1))
    assert type(config.epochs) is int and type(config.threads) is int
    assert type(config.lr_start) is float and config.lr_start == 0.5


def test_from_dict_needs_a_dict():
    with pytest.raises(TypeError, match="TrainConfig values must be a dict, got list"):
        TrainConfig.from_dict([("epochs", 1)])
