"""qnnlib.notebooks: reading a notebook's params.yaml section."""
from qnnpipeline.params import notebook_params as load_params


def test_notebook_params_read_exponents_as_numbers(tmp_path):
    """`dvc exp run -S section.lr_end=3e-5` writes `3e-05`, which plain YAML reads as text."""
    params = tmp_path / "params.yaml"
    params.write_text("seed: 1\nnb:\n  lr_end: 3e-05\n")
    assert load_params("nb", params) == {"lr_end": 3e-05, "seed": 1}
