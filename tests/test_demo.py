"""`frugalign demo`, the README's first command: part 1 (the arith DPO bench) end to end."""

import json

import pytest

from frugalign.cli import main


@pytest.mark.slow
def test_demo_runs_the_arith_bench_and_writes_its_result_and_plot(tmp_path, monkeypatch):
    monkeypatch.setenv("FRUGALIGN_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "demo"
    assert main(["demo", "--skip-smollm2", "--output-dir", str(out)]) == 0
    result = json.loads((out / "arith-dpo.json").read_text())
    assert result["bench"] == "dpo" and [r["method"] for r in result["runs"]] == ["base", "dpo"]
    assert (out / "arith-dpo.png").stat().st_size > 10_000
