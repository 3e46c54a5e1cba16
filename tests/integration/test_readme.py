"""The README's Python example runs as written (with the hashing encoder instead of MiniLM, for speed)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_python_example_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    code = blocks[0].replace('encoder="minilm"', 'encoder="hashing"')
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    assert (tmp_path / "runs" / "my-model" / "model.safetensors").is_file()


def test_readme_names_the_two_commands_first():
    text = README.read_text()
    assert text.index("make quickstart") < text.index("```python")
    assert "make test" in text
