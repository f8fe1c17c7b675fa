"""The README's stream, FIFO, labels and telemetry snippets run as written, in a fresh process."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
SECTIONS = ("## Streams", "## FIFO histories, labelled views, telemetry")


def _snippets() -> str:
    """The ```python blocks of the stream sections, in order."""
    text = README.read_text()
    start = text.index(SECTIONS[0])
    end = text.index("\n## ", text.index(SECTIONS[1]) + 1)
    blocks = re.findall(r"```python\n(.*?)```", text[start:end], re.S)
    assert len(blocks) >= 4, "the README's stream sections lost their examples"
    return "\n".join(blocks)


def test_stream_snippets_run_as_written(stream_dir, tmp_path):
    code = _snippets().replace("    ...", "    pass")
    # the telemetry snippet records "wfs" and "slopes" for 10 s: shorten it, write meanwhile
    code = code.replace('seconds=10)', 'seconds=0.5)')
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300, env={**__import__("os").environ,
                                                      "DAO_SHM_DIR": stream_dir})
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "run1.nc").exists() and (tmp_path / "now.nc").exists()
