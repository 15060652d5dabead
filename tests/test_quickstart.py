"""The README's library example runs as written and learns."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_library_example_trains():
    code = re.search(r"## Use it as a library\n\n```python\n(.*?)```", README.read_text(), re.S).group(1)
    scope = {}
    exec(compile(code, "README example", "exec"), scope)
    assert scope["loss"] < 0.05
