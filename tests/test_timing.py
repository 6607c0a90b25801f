"""qnnlib.timing.race against a simulated clock whose durations are known exactly."""
import pytest

from qnnlib import timing


class FakeMachine:
    """A clock that advances only when a simulated function runs; `load(t)` slows it."""

    def __init__(self, load=lambda t: 0.0):
        self.now, self.load, self.log = 0.0, load, []

    def clock(self):
        return self.now

    def function(self, name, seconds):
        def run():
            self.log.append(name)
            self.now += seconds * (1 + self.load(self.now))
        return run


def test_best_and_median_are_the_known_durations():
    machine = FakeMachine()
    result = timing.race({"a": machine.function("a", 0.003), "b": machine.function("b", 0.2)},
                         repeats=3, min_sample_s=0.05, clock=machine.clock)
    assert result["a"].calls == 20 and result["b"].calls == 1   # autorange: 1, 2, 5, 10, 20
    assert result["a"].best_s == pytest.approx(0.003) and result["a"].median_s == pytest.approx(0.003)
    assert result["b"].best_s == pytest.approx(0.2)
    assert result["a"].to_dict()["samples_s"] == pytest.approx([0.003] * 3)


def test_samples_alternate_so_drift_hits_both_alike():
    # load rises linearly with time; a and b take the same time on an idle machine
    machine = FakeMachine(load=lambda t: t)
    result = timing.race({"a": machine.function("a", 0.1), "b": machine.function("b", 0.1)},
                         repeats=4, calls=1, warmup=1, clock=machine.clock)
    assert machine.log == ["a", "b"] + ["a", "b"] * 4                 # warm-up, then alternation
    ratio = result["a"].median_s / result["b"].median_s
    assert ratio == pytest.approx(1.0, abs=0.1)
    # timed one after the other, the same two functions would differ by far more
    sequential = FakeMachine(load=lambda t: t)
    first = timing.race({"a": sequential.function("a", 0.1)}, repeats=4, calls=1, clock=sequential.clock)
    second = timing.race({"b": sequential.function("b", 0.1)}, repeats=4, calls=1, clock=sequential.clock)
    assert second["b"].median_s / first["a"].median_s > 1.3


def test_synchronize_runs_before_every_clock_reading():
    machine, synced = FakeMachine(), []
    timing.race({"a": machine.function("a", 0.01)}, repeats=2, calls=3, warmup=0,
                synchronize=lambda: synced.append(len(machine.log)), clock=machine.clock)
    assert synced == [0, 3, 3, 6]          # start and end of each sample, after its calls


def test_real_clock_orders_a_slow_and_a_fast_function():
    result = timing.race({"fast": lambda: sum(range(10)), "slow": lambda: sum(range(20000))},
                         repeats=3, min_sample_s=0.005)
    assert result["fast"].best_s < result["slow"].best_s
    assert result["fast"].best_s <= result["fast"].median_s
    with pytest.raises(ValueError):
        timing.race({"fast": lambda: None}, repeats=0)
