"""qnnlib.energy: the Horowitz table and the per-image accounting, checked against values
computed by hand for a tiny 100-70-10 network."""
import math

import pytest

from qnnlib import energy

TINY = [(100, 70), (70, 10)]


def test_horowitz_numbers_are_the_papers():
    assert energy.ADD_PJ == {"int8": 0.03, "int32": 0.1, "fp16": 0.4, "fp32": 0.9}
    assert energy.MULT_PJ == {"int8": 0.2, "int32": 3.1, "fp16": 1.1, "fp32": 3.7}
    assert energy.MEMORY_PJ_PER_64BIT["cache_8KB"] == 10
    assert energy.MEMORY_PJ_PER_64BIT["cache_32KB"] == 20
    assert energy.MEMORY_PJ_PER_64BIT["cache_1MB"] == 100
    assert energy.DRAM_PJ_RANGE == (1300, 2600)
    table = energy.horowitz_table()
    assert table.set_index("operation").loc["32-bit float", "mult_pJ"] == 3.7


def test_binary_operation_costs():
    assert energy.POPCOUNT64_FULL_ADDER_BITS == 120
    assert energy.XNOR64_PJ == pytest.approx(0.2)
    assert energy.POPCOUNT64_PJ == pytest.approx(0.375)
    assert energy.ACCUMULATE_PJ == pytest.approx(0.1)


def test_mlp_layers():
    assert energy.mlp_layers(784, 4096, 3, 10) == [(784, 4096), (4096, 4096), (4096, 4096), (4096, 10)]
    assert energy.mlp_layers(100, 70, 1, 10) == TINY
    with pytest.raises(ValueError):
        energy.mlp_layers(depth=0)


@pytest.mark.parametrize("nbytes, level", [
    (0, "cache_8KB"), (8192, "cache_8KB"), (8193, "cache_32KB"), (32768, "cache_32KB"),
    (32769, "cache_1MB"), (2**20, "cache_1MB"), (2**20 + 1, "dram"), (1e12, "dram")])
def test_memory_level_is_the_smallest_that_fits(nbytes, level):
    assert energy.memory_level(nbytes) == level


def test_float32_counts_by_hand():
    ops = energy.count_ops(TINY, "float32").set_index("layer")
    # layer 1: 7000 MACs + 70 batch-norm affines
    assert ops.loc[1, ["macs", "fp32_mult", "fp32_add", "int32_add", "xnor64"]].tolist() == [7000, 7070, 7070, 0, 0]
    assert ops.loc[1, ["weight_bits", "param_bits", "input_bits", "output_bits"]].tolist() == [224000, 4480, 3200, 2240]
    assert ops.loc[2, ["macs", "fp32_mult", "fp32_add"]].tolist() == [700, 710, 710]


def test_bnn_counts_by_hand():
    ops = energy.count_ops(TINY, "bnn").set_index("layer")
    # first layer: 8 planes x 2 words x 70 units; adds: 16 accumulates + 8 plane combines + 1 compare
    assert ops.loc[1, "kind"] == "bitplane"
    assert ops.loc[1, ["xnor64", "popcount64", "int32_add", "fp32_mult"]].tolist() == [1120, 1120, 1750, 0]
    assert ops.loc[1, ["weight_bits", "param_bits", "input_bits", "output_bits"]].tolist() == [7000, 2240, 800, 70]
    # output layer: 2 words x 10 units; adds: 20 accumulates + 10 (K - 2 popcount); float BN affine
    assert ops.loc[2, "kind"] == "binary_out"
    assert ops.loc[2, ["xnor64", "popcount64", "int32_add", "fp32_mult", "fp32_add"]].tolist() == [20, 20, 30, 10, 10]
    assert ops.loc[2, ["weight_bits", "param_bits", "input_bits", "output_bits"]].tolist() == [700, 640, 70, 320]


def test_hidden_binary_layer_counts():
    ops = energy.count_ops([(784, 128), (128, 64), (64, 10)], "bnn").set_index("layer")
    assert ops.loc[2, "kind"] == "binary"
    # 2 words x 64 units; adds: 2 accumulates + 1 compare per unit
    assert ops.loc[2, ["xnor64", "popcount64", "int32_add", "param_bits", "input_bits"]].tolist() == [128, 128, 192, 2048, 128]


def test_float32_energy_by_hand():
    table = energy.energy_per_image(TINY, "float32").set_index("layer")
    assert table["arithmetic_pj"].tolist() == pytest.approx([7070 * 4.6, 710 * 4.6])
    # 251520 parameter bits = 31440 bytes -> 32 KB cache, 20 pJ per 64 bits
    assert set(table["weight_memory"]) == {"cache_32KB"}
    assert table["weight_pj"].sum() == pytest.approx(251520 / 64 * 20)
    # largest activation vector: 3200 bits = 400 bytes -> 8 KB cache
    assert table["activation_pj"].tolist() == pytest.approx([850.0, 400.0])


def test_bnn_energy_by_hand():
    table = energy.energy_per_image(TINY, "bnn").set_index("layer")
    assert table["arithmetic_pj"].tolist() == pytest.approx([819.0, 60.5])
    assert set(table["weight_memory"]) == {"cache_8KB"}
    assert table["weight_pj"].sum() == pytest.approx(10580 / 64 * 10)
    assert table["activation_pj"].tolist() == pytest.approx([870 / 64 * 10, 390 / 64 * 10])
    assert table["total_pj"].sum() == pytest.approx(819 + 60.5 + 1653.125 + 135.9375 + 60.9375)


def test_batch_size_and_dram_cost_and_forced_levels():
    one = energy.energy_per_image(TINY, "float32")
    hundred = energy.energy_per_image(TINY, "float32", batch_size=100)
    assert hundred["weight_pj"].sum() == pytest.approx(one["weight_pj"].sum() / 100)
    assert hundred["arithmetic_pj"].sum() == pytest.approx(one["arithmetic_pj"].sum())
    forced = energy.energy_per_image(TINY, "float32", weight_memory="dram", dram_pj=2600)
    assert forced["weight_pj"].sum() == pytest.approx(251520 / 64 * 2600)
    with pytest.raises(ValueError):
        energy.energy_per_image(TINY, "float32", weight_memory="cache_2KB")
    with pytest.raises(ValueError):
        energy.energy_per_image(TINY, "float32", batch_size=0)
    with pytest.raises(ValueError):
        energy.count_ops(TINY, "int8")


def test_paper_network_summary():
    summary = energy.energy_summary(energy.mlp_layers())
    # 36.8 M weights: float32 147 MB and packed 4.6 MB both live in DRAM
    assert summary.loc["float32", "weight_memory"] == summary.loc["bnn", "weight_memory"] == "dram"
    weights = 784 * 4096 + 2 * 4096 * 4096 + 4096 * 10
    assert summary.loc["bnn", "weight_bytes"] == pytest.approx((weights + 3 * 4096 * 32 + 10 * 64) / 8)
    # same memory level: weight traffic is ~32x smaller (a little less: thresholds are 32-bit)
    ratio = summary.loc["float32", "weight_pj"] / summary.loc["bnn", "weight_pj"]
    assert 31 < ratio < 32
    assert summary.loc["float32", "arithmetic_pj"] / summary.loc["bnn", "arithmetic_pj"] > 100
    assert math.isclose(summary.loc["bnn", "total_pj"],
                        summary.loc["bnn", ["arithmetic_pj", "weight_pj", "activation_pj"]].sum())
