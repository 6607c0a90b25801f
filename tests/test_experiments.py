"""Tests of qnnlib.experiments: grids of (configuration x seed) training runs as tidy
DataFrames, their summaries, and the seeding of stochastic binarization."""
import math

import pandas as pd
import pytest
import torch

from qnnlib.experiments import (GridResult, binarization_generator, compare, format_mean_std, run_grid, t_quantile,
                                summarize)
from qnnlib.models import mnist_mlp
from qnnlib.quantizers import StochasticSign
from support import synthetic_splits


pytestmark = pytest.mark.usefixtures("one_thread")


TINY = dict(hidden=16, depth=1, in_features=20, dropout_in=0.0, dropout_hidden=0.0)
TRAIN = dict(epochs=2, batch_size=25, lr_end=3e-4, device="cpu", threads=1)


def tiny_configs():
    return [{"name": "det", "mode": "deterministic", "model": dict(TINY)},
            {"name": "sto", "mode": "stochastic", "model": dict(TINY, act_mode="stochastic")}]


@pytest.fixture(scope="module")
def grid():
    return run_grid(tiny_configs(), synthetic_splits(300, features=20), seeds=[0, 1], train=TRAIN)


def test_runs_table_has_one_row_per_config_and_seed(grid):
    assert isinstance(grid, GridResult)
    runs = grid.runs
    assert list(runs["name"]) == ["det", "det", "sto", "sto"]
    assert list(runs["seed"]) == [0, 1, 0, 1]
    assert list(runs["mode"]) == ["deterministic"] * 2 + ["stochastic"] * 2
    for column in ("best_val_error", "test_error", "final_val_error", "final_test_error"):
        assert runs[column].between(0, 1).all()
    assert (runs["epochs"] == 2).all() and runs["best_epoch"].between(1, 2).all()
    assert (runs["seconds"] > 0).all()


def test_history_is_long_format_with_labels(grid):
    history = grid.history
    assert list(history.columns[:3]) == ["name", "mode", "seed"]
    assert len(history) == 4 * 2
    assert {"epoch", "lr", "train_loss", "val_error", "test_error"} <= set(history.columns)
    one = history[(history["name"] == "sto") & (history["seed"] == 1)]
    assert list(one["epoch"]) == [1, 2]
    # the reported test error is the one at the best-validation epoch of that history
    run = grid.runs[(grid.runs["name"] == "sto") & (grid.runs["seed"] == 1)].iloc[0]
    assert run["test_error"] == one[one["epoch"] == run["best_epoch"]]["test_error"].item()
    assert run["final_test_error"] == one["test_error"].iloc[-1]


def test_rerun_is_identical_and_seeds_differ(grid):
    again = run_grid(tiny_configs(), synthetic_splits(300, features=20), seeds=[0, 1], train=TRAIN)
    columns = ["best_epoch", "best_val_error", "test_error", "final_test_error"]
    pd.testing.assert_frame_equal(grid.runs[columns], again.runs[columns])
    losses = grid.history.set_index(["name", "seed", "epoch"])["train_loss"]
    assert losses.loc[("det", 0, 1)] != losses.loc[("det", 1, 1)]


def test_config_train_overrides_shared_and_mapping_form():
    configs = {"short": {"model": dict(TINY), "train": {"epochs": 1}},
               "long": {"model": dict(TINY)}}
    grid = run_grid(configs, synthetic_splits(300, features=20), seeds=[3], train=TRAIN)
    assert list(grid.runs["name"]) == ["short", "long"]
    assert list(grid.runs["epochs"]) == [1, 2]
    assert (grid.runs["seed"] == 3).all()


def test_after_run_adds_columns_and_sees_the_trained_model():
    seen = []

    def after_run(config, seed, result):
        seen.append((config["name"], seed, result.best_epoch))
        return {"n_params": sum(p.numel() for p in result.model.parameters())}

    grid = run_grid(tiny_configs()[:1], synthetic_splits(300, features=20), seeds=[0], train=TRAIN, after_run=after_run)
    assert seen == [("det", 0, grid.runs["best_epoch"].item())]
    assert grid.runs["n_params"].item() > 0

    with pytest.raises(ValueError, match="reserved"):
        run_grid(tiny_configs()[:1], synthetic_splits(300, features=20), seeds=[0], train=TRAIN,
                 after_run=lambda c, s, r: {"test_error": 0.0})


def test_callable_model_gets_the_binarization_generator():
    received = []

    def build(generator):
        received.append(generator)
        return mnist_mlp(**TINY, act_mode="stochastic", generator=generator)

    run_grid([{"name": "fn", "model": build}], synthetic_splits(300, features=20), seeds=[5], train=dict(TRAIN, epochs=1))
    assert len(received) == 1 and isinstance(received[0], torch.Generator)


def test_dict_models_get_an_explicit_generator(monkeypatch):
    built = []
    import qnnlib.experiments as experiments

    original = experiments.build_model

    def spy(spec):
        model = original(spec)
        built.append(model)
        return model

    monkeypatch.setattr(experiments, "build_model", spy)
    run_grid(tiny_configs()[1:], synthetic_splits(300, features=20), seeds=[0], train=dict(TRAIN, epochs=1))
    stochastic = [m for m in built[0].modules() if isinstance(m, StochasticSign)]
    assert stochastic and all(isinstance(m.generator, torch.Generator) for m in stochastic)


def test_binarization_generator_is_reproducible_and_not_the_shuffle_stream():
    a = torch.rand(5, generator=binarization_generator(7))
    b = torch.rand(5, generator=binarization_generator(7))
    shuffle = torch.rand(5, generator=torch.Generator().manual_seed(7))
    other = torch.rand(5, generator=binarization_generator(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, shuffle) and not torch.equal(a, other)


@pytest.mark.parametrize("configs, message", [
    ([], "at least one configuration"),
    ([{"name": "a"}], "'name' and 'model'"),
    ([{"name": "a", "model": dict(TINY)}, {"name": "a", "model": dict(TINY)}], "unique"),
])
def test_bad_configs_are_refused(configs, message):
    with pytest.raises(ValueError, match=message):
        run_grid(configs, synthetic_splits(300, features=20), seeds=[0], train=TRAIN)


def test_no_seeds_and_unknown_train_keys_are_refused():
    with pytest.raises(ValueError, match="at least one seed"):
        run_grid(tiny_configs(), synthetic_splits(300, features=20), seeds=[], train=TRAIN)
    with pytest.raises(ValueError, match="unknown TrainConfig keys"):
        run_grid(tiny_configs(), synthetic_splits(300, features=20), seeds=[0], train=dict(TRAIN, epoch=3))
    with pytest.raises(TypeError, match="build_model dict or a callable"):
        run_grid([{"name": "x", "model": 3}], synthetic_splits(300, features=20), seeds=[0], train=TRAIN)


def test_summarize_mean_std_and_order():
    runs = pd.DataFrame({"name": ["b", "b", "a", "a", "c"], "kind": ["x", "x", "y", "y", "y"],
                         "test_error": [0.10, 0.20, 0.05, 0.05, 0.30]})
    table = summarize(runs)
    assert list(table["name"]) == ["b", "a", "c"]
    assert table["mean"].tolist() == pytest.approx([0.15, 0.05, 0.30])
    assert table["std"].tolist() == pytest.approx([math.sqrt(0.005), 0.0, 0.0])  # ddof=1; one seed -> 0
    assert table["n"].tolist() == [2, 2, 1]
    assert table["min"].tolist() == pytest.approx([0.1, 0.05, 0.3])
    assert table["max"].tolist() == pytest.approx([0.2, 0.05, 0.3])
    by_two = summarize(runs, by=["kind", "name"])
    assert list(by_two.columns[:2]) == ["kind", "name"] and len(by_two) == 3


def test_grid_summary_matches_statistics_computed_by_hand(grid):
    """Mean and sample standard deviation (ddof=1) of each configuration's seeds, from
    the per-run numbers with plain python arithmetic, not through pandas."""
    table = grid.summary("final_test_error")
    assert table["name"].tolist() == ["det", "sto"]
    for row in table.itertuples():
        values = [v for n, v in zip(grid.runs["name"], grid.runs["final_test_error"]) if n == row.name]
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
        assert row.mean == pytest.approx(mean, abs=1e-15) and row.std == pytest.approx(std, abs=1e-15)
        assert (row.min, row.max, row.n) == (min(values), max(values), len(values))


def test_format_mean_std():
    assert format_mean_std(0.01234, 0.0005) == "1.23 ± 0.05"
    assert format_mean_std(1.5, 0.25, scale=1, digits=1) == "1.5 ± 0.2"


def test_parallel_workers_give_the_same_runs_as_one_process():
    splits = synthetic_splits(300, features=20)
    serial = run_grid(tiny_configs(), splits, seeds=[0, 1], train=TRAIN)
    parallel = run_grid(tiny_configs(), splits, seeds=[0, 1], train=TRAIN, workers=2)
    drop = ["seconds"]
    pd.testing.assert_frame_equal(serial.runs.drop(columns=drop), parallel.runs.drop(columns=drop))
    pd.testing.assert_frame_equal(serial.history.drop(columns=drop),
                                  parallel.history.drop(columns=drop))


def test_context_wraps_each_run_and_after_run_sees_its_state():
    from contextlib import contextmanager

    from torch.optim.optimizer import register_optimizer_step_post_hook
    entered, seen = [], {}

    @contextmanager
    def count_steps(config, seed, model):
        steps = []
        handle = register_optimizer_step_post_hook(
            lambda *args: steps.append(1))
        entered.append((config["name"], seed, type(model).__name__))
        seen[config["name"], seed] = steps
        try:
            yield
        finally:
            handle.remove()

    def after_run(config, seed, result):
        return {"steps": len(seen[config["name"], seed])}

    grid = run_grid(tiny_configs()[:1], synthetic_splits(300, features=20), seeds=[0, 1],
                    train=TRAIN, context=count_steps, after_run=after_run, workers=2)
    # 100 training examples (a third of 300), batch 25: 4 steps an epoch, counted where each ran.
    assert grid.runs["steps"].tolist() == [100 // TRAIN["batch_size"] * TRAIN["epochs"]] * 2
    # this process trains alongside the local Ray: only its own runs entered the context here
    assert len(entered) == grid.nodes.count("local")


@pytest.mark.parametrize("workers", [0, -1, 1.5, True])
def test_bad_worker_counts_are_refused(workers):
    with pytest.raises(ValueError, match="workers must be a positive integer"):
        run_grid(tiny_configs(), synthetic_splits(300, features=20), seeds=[0], train=TRAIN,
                 workers=workers)


@pytest.mark.parametrize("p", [0.9, 0.95, 0.975, 0.995])
def test_t_quantile_matches_closed_forms(p):
    import math
    from statistics import NormalDist
    # df = 1 is the Cauchy distribution and df = 2 has a closed form; large df is normal.
    assert t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-4)
    assert t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-5)
    assert t_quantile(p, 1e6) == pytest.approx(NormalDist().inv_cdf(p), rel=1e-4)


def test_compare_welch_interval_by_hand():
    # Equal variances and sizes: Welch's df = 2 (n - 1) = 4; t(0.975, 4) = 2.776445 (tables).
    result = compare([0.01, 0.02, 0.03], [0.02, 0.03, 0.04])
    half = 2.776445 * (2 * 0.0001 / 3) ** 0.5
    assert result.difference == pytest.approx(-0.01)
    assert (result.low, result.high) == pytest.approx((-0.01 - half, -0.01 + half), rel=1e-5)
    assert result.verdict == "no clear difference"
    assert not result.within(0.03) and result.within(0.04)
    assert compare([0.01, 0.011, 0.012], [0.05, 0.051, 0.049]).verdict == "lower"
    assert compare([0.05, 0.051, 0.049], [0.01, 0.011, 0.012]).verdict == "higher"
    single = compare([0.01], [0.02, 0.03])
    assert single.verdict == "single run" and not single.within(1.0)
    assert "single run" in single.describe()
    with pytest.raises(ValueError, match="non-empty, finite"):
        compare([float("nan"), 0.1], [0.1, 0.2])


def test_the_tests_welch_reference_matches_tables():
    """[1, 2, 3] vs [4, 5, 6]: difference -3, standard error sqrt(2/3), df 4 and the
    textbook t(0.975, 4) = 2.776445, so the 95 % interval is -3 -+ 2.266958."""
    from support import t_quantile_reference, welch_reference

    assert t_quantile_reference(0.975, 2) == pytest.approx(4.302653, abs=1e-5)
    assert t_quantile_reference(0.95, 10) == pytest.approx(1.812461, abs=1e-5)
    difference, low, high = welch_reference([1, 2, 3], [4, 5, 6])
    assert difference == -3 and (low, high) == pytest.approx((-5.266958, -0.733042), abs=1e-5)


def record_of(a, b):
    return compare(a, b).record()


def test_record_is_welch_by_hand():
    # equal sizes and variances: df = 4, t_0.975(4) = 2.776445 (tables), sd of the difference sqrt(2/3)
    record = record_of([0.01, 0.02, 0.03], [0.00, 0.01, 0.02])
    half = 100 * 2.776445 * math.sqrt(2 / 3) / 100
    assert record["difference_pct"] == pytest.approx(1.0)
    assert record["ci_low_pct"] == pytest.approx(1.0 - half, abs=1e-4)
    assert record["ci_high_pct"] == pytest.approx(1.0 + half, abs=1e-4)
    assert (record["n_a"], record["n_b"], record["verdict"]) == (3, 3, "no clear difference")
    clear = record_of([0.100, 0.101, 0.102], [0.05, 0.051, 0.052])
    assert clear["verdict"] == "higher" and clear["ci_low_pct"] > 0
    assert record_of([0.05, 0.051, 0.052], [0.100, 0.101, 0.102])["verdict"] == "lower"


def test_record_draws_no_conclusion_below_three_seeds():
    record = record_of([0.100, 0.101], [0.05, 0.051])
    assert record["verdict"] == "single run" and record["ci_low_pct"] > 0     # interval clear, seeds too few
    single = record_of([0.1], [0.05, 0.06, 0.07])
    assert single["verdict"] == "single run" and single["ci_low_pct"] is None
    assert single["difference_pct"] == pytest.approx(4.0)
    assert compare([0.1, 0.2], [0.05, 0.06]).record(min_seeds=2)["verdict"] != "single run"
    assert compare([10.0, 10.1, 10.2], [5.0, 5.1, 5.2]).record(scale=1)["difference_pct"] == pytest.approx(5.0)
