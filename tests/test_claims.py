"""qnnlib.claims: the claims table, optional inputs, the GPU benchmark reader, the README block."""
import json

import pandas as pd
import pytest

from pathlib import Path

from qnnpipeline import claims, claims_table
from test_claims_table import RUNTIME


def test_unmeasured_claims_say_pending():
    table = claims.claims_table({"weight_memory": ("31.9x less", "saved files")})
    assert list(table.columns) == claims.COLUMNS
    assert len(table) == len(claims.CLAIMS)
    rows = table.set_index("claim")
    gpu = rows.loc[claims.CLAIMS["gemm_vs_cublas"]["claim"]]
    assert gpu["ours"] == claims.PENDING_GPU and gpu["paper"] == "3.4x faster (GTX 750)"
    assert rows.loc[claims.CLAIMS["mnist_error_paper"]["claim"], "ours"] == claims.PENDING_GPU
    assert rows.loc[claims.CLAIMS["weight_memory"]["claim"], "ours"] == "31.9x less"
    assert all(table["command"].str.len() > 0)


def test_unknown_claim_is_an_error():
    with pytest.raises(KeyError):
        claims.claims_table({"speed_of_light": ("1x", "")})


def test_optional_metrics(tmp_path, monkeypatch):
    monkeypatch.setenv("QNN_RESULTS_DIR", str(tmp_path))
    assert claims.load_metrics("mnist_paper") is None
    (tmp_path / "metrics").mkdir(exist_ok=True)
    (tmp_path / "metrics" / "mnist_paper.json").write_text(json.dumps({"test_error": 0.0096}))
    assert claims.error_pct(claims.load_metrics("mnist_paper")) == pytest.approx(0.96)
    assert claims.error_pct(None) is None
    assert claims.error_pct({"test_error": float("nan")}) is None


def gpu_report(**row):
    return {"backend": "cuda", "dry_run": False, "provenance": {"gpu": {"gpu": "NVIDIA H100"}},
            "shapes": [{"shape": "4096^3", "cublas_sgemm_ms": 1.0, "xnor_cuda_core_ms": 0.5},
                       {"shape": "8192^3", "cublas_sgemm_ms": 8.0, "naive_float_ms": 40.0,
                        "xnor_cuda_core_ms": 4.0, "xnor_tensor_core_ms": 1.0, **row}]}


def test_gpu_gemm_speedup_reads_make_gpu_reports():
    assert claims.gpu_gemm_speedup(None) is None
    assert claims.gpu_gemm_speedup({**gpu_report(), "dry_run": True}) is None  # CPU dry run
    assert claims.gpu_gemm_speedup({**gpu_report(), "backend": "cpu"}) is None
    assert claims.gpu_gemm_speedup(gpu_report()) == {
        "vs_cublas": 8.0, "vs_unoptimised": 40.0, "variant": "tensor_core", "gpu": "NVIDIA H100"}
    # a kernel that is not exact is never quoted
    slower = claims.gpu_gemm_speedup(gpu_report(exact={"xnor_tensor_core": False}))
    assert slower["variant"] == "cuda_core" and slower["vs_cublas"] == 2.0


def test_gpu_runtime_speedup_needs_every_label_to_agree():
    report = {"backend": "cuda", "dry_run": False, "images": 10000, "all_agree": True,
              "bnn_vs_float_naive": 9.5, "bnn_vs_float_cublas": 1.5,
              "provenance": {"gpu": {"gpu": "NVIDIA H200"}}}
    assert claims.gpu_runtime_speedup(report) == {"vs_unoptimised": 9.5, "vs_cublas": 1.5,
                                                  "images": 10000, "gpu": "NVIDIA H200"}
    assert claims.gpu_runtime_speedup({**report, "all_agree": False}) is None


def test_markdown_and_readme_block(tmp_path):
    table = claims.claims_table({})
    markdown = claims.markdown_table(table)
    lines = markdown.strip().splitlines()
    assert lines[0] == "| claim | paper | ours | setting | command |"
    assert len(lines) == 2 + len(claims.CLAIMS)
    assert f"`{claims.CLAIMS['mnist_error_cpu']['command']}`" in markdown
    readme = f"# x\n\n## Claims\n\n{claims.README_START}\nold\n{claims.README_END}\n\n## After\n"
    updated = claims.update_readme(readme, markdown)
    assert "old" not in updated and markdown in updated and updated.endswith("## After\n")
    assert claims.update_readme(updated, markdown) == updated
    with pytest.raises(ValueError):
        claims.update_readme("# no markers\n", markdown)


def test_stage_builds_the_csv_and_the_readme_copies_it(tmp_path, monkeypatch, capsys):
    """`python -m qnnpipeline.claims_table` builds claims.csv from metrics and benchmark files;
    `--update-readme` copies it; empty cells stay empty, not "nan"."""
    monkeypatch.setenv("QNN_RESULTS_DIR", str(tmp_path))
    (tmp_path / "metrics").mkdir()
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "metrics" / "06_runtime_and_energy.json").write_text(json.dumps(RUNTIME))
    claims_table.main([])
    csv = tmp_path / "tables" / "claims.csv"
    table = pd.read_csv(csv, keep_default_na=False)
    assert table.shape == (len(claims.CLAIMS), len(claims.COLUMNS))
    assert claims.PENDING_GPU in table["ours"].tolist()
    assert "|" in capsys.readouterr().out
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{claims.README_START}\n{claims.README_END}\n")
    claims_table.main(["--update-readme", str(readme)])
    text = readme.read_text()
    assert text.startswith("intro\n") and "nan" not in text
    assert claims.markdown_table(table) in text


def test_readme_table_agrees_with_claims_csv():
    """The README's claims block is the committed results/tables/claims.csv (`make repro`
    copies it; rerun `python -m qnnpipeline.claims_table --update-readme README.md`)."""
    root = Path(__file__).resolve().parents[1]
    table = pd.read_csv(root / "results" / "tables" / "claims.csv", keep_default_na=False)
    readme = (root / "README.md").read_text()
    block = readme[readme.index(claims.README_START) + len(claims.README_START):
                   readme.index(claims.README_END)]
    assert block.strip() == claims.markdown_table(table).strip()


def test_load_run_reads_what_qnn_train_writes(tmp_path, monkeypatch):
    from qnnpipeline import paths

    monkeypatch.setenv("QNN_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("QNN_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    empty = claims.load_run("quick")
    assert empty == {"name": "quick", "metrics": None, "history": None, "model": None,
                     "checkpoint": None}
    (tmp_path / "results" / "metrics").mkdir(parents=True)
    (tmp_path / "results" / "tables").mkdir()
    (tmp_path / "results" / "metrics" / "quick.json").write_text('{"test_error": 0.1}')
    (tmp_path / "results" / "tables" / "quick_history.csv").write_text("epoch,val_error\n1,0.2\n")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "quick.json").write_text('{"model": {"hidden": 8}, "data": {}}')
    (tmp_path / "checkpoints" / "quick.pt").write_bytes(b"x")
    run = claims.load_run("quick")
    assert run["metrics"] == {"test_error": 0.1} and run["model"] == {"hidden": 8}
    assert run["history"]["val_error"].tolist() == [0.2]
    assert run["checkpoint"] == tmp_path / "checkpoints" / "quick.pt"


def test_no_claim_sets_a_cpu_loop_beside_the_papers_gpu_baseline():
    """A latency-bound scalar loop is not the paper's unoptimised GPU kernel: no row may
    compare against it, and the modelled energy row says it is modelled."""
    for claim in claims.CLAIMS.values():
        assert "triple loop" not in claim["claim"]
    assert "modelled" in claims.CLAIMS["energy"]["claim"]


def test_claims_does_not_import_the_table_that_builds_on_it():
    """Issue 20: claims and claims_table imported each other."""
    import ast

    source = Path(claims.__file__).read_text()
    names = {alias.name for node in ast.walk(ast.parse(source)) if isinstance(node, ast.ImportFrom)
             for alias in node.names} | {node.module or "" for node in ast.walk(ast.parse(source))
                                         if isinstance(node, ast.ImportFrom)}
    assert not {name for name in names if "claims_table" in name}
