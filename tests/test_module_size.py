"""Every module of the library, the pipeline and the benchmarks stays readable in one
sitting: at most 300 lines (issue 20; quantizers.py had grown to 384)."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 300


def test_every_module_is_at_most_300_lines():
    long = {str(path.relative_to(ROOT)): count
            for folder in ("qnnlib", "qnnpipeline", "benchmarks", "scripts")
            for path in sorted((ROOT / folder).rglob("*.py"))
            if (count := len(path.read_text().splitlines())) > LIMIT}
    assert not long, f"modules over {LIMIT} lines: {long}"
