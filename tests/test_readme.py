"""The README's Python example runs as written (on the embedded SmolLM2)."""

import json
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.slow
def test_readme_python_example_runs(tmp_path, monkeypatch):
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    rows = [{"prompt": "What is 2 + 2?", "chosen": "4.", "rejected": "Five, I think."},
            {"prompt": "Capital of Italy?", "chosen": "Rome.", "rejected": "Paris."}]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    assert (tmp_path / "runs" / "dpo" / "metrics.jsonl").exists()


def test_readme_bandit_example_runs(capsys):
    """The APPO simulation example prints APPO's share of informative's queries and its regret ratio."""
    block = next(b for b in re.findall(r"```python\n(.*?)```", README.read_text(), re.S) if "frugalign.bandit" in b)
    exec(compile(block, "README.md", "exec"), {})
    share, ratio = map(float, capsys.readouterr().out.split())
    assert 0 < share < 1 and ratio > 0
