"""The README's examples run as written, each in a fresh process (started components and
loops included)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

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


def _section_blocks(title: str, lang: str = "python") -> list[str]:
    text = README.read_text()
    start = text.index(title)
    end = text.index("\n## ", start + 1)
    return re.findall(rf"```{lang}\n(.*?)```", text[start:end], re.S)


def test_control_law_snippet_runs_as_written(stream_dir, tmp_path):
    """Swaps, A/B comparison, per-mode gains, calibration file and restart, as written."""
    (code,) = _section_blocks("## Control laws, prototyped live")
    # in a file, as a user would save it (a class typed at `python -c` has no source to ship)
    (tmp_path / "snippet.py").write_text(code)
    res = subprocess.run([sys.executable, "snippet.py"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=600, env={**__import__("os").environ,
                                                      "DAO_SHM_DIR": stream_dir})
    assert res.returncode == 0, res.stderr[-3000:]
    assert "strehl" in res.stdout and "leaky" in res.stdout and "stock" in res.stdout
    assert (tmp_path / "cal.npz").exists()


@pytest.mark.slow
def test_loop_snippets_run_as_written(stream_dir, tmp_path):
    """The loop example and the loop configuration file (its gain honoured by close_loop)."""
    blocks = _section_blocks("## Simulated bench")
    toml = _section_blocks("## Simulated bench", "toml")
    assert len(toml) == 1 and "gain = 0.4" in toml[0]
    (tmp_path / "loop.toml").write_text(toml[0])
    check = ("\nfrom dao.loop import AOLoop\n"
             "with AOLoop('loop.toml') as ao2:\n"
             "    assert ao2.gain == 0.0\n"
             "    ao2.close_loop()\n"
             "    assert ao2.gain == 0.4, ao2.gain\n"
             "    assert ao2.config['streams']['dm_command'] == 'dm0'\n"
             "    ao2.wait(200)\n"
             "    print('CLOSED', ao2.expose(300)['strehl'])\n")
    code = "\n".join(blocks[1:]) + check  # blocks[0]: the bench alone (dao.hw's own tests)
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=600, env={**__import__("os").environ,
                                                      "DAO_SHM_DIR": stream_dir})
    assert res.returncode == 0, res.stderr[-3000:]
    assert float(res.stdout.split("CLOSED")[1]) > 0.3
    assert (tmp_path / "run.nc").exists()


def _run(code: str, cwd, stream_dir: str, timeout: float = 300) -> subprocess.CompletedProcess:
    (Path(cwd) / "snippet.py").write_text(code)
    return subprocess.run([sys.executable, "snippet.py"], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout,
                          env={**__import__("os").environ, "DAO_SHM_DIR": stream_dir})


def test_numerics_snippet_runs_as_written(stream_dir, tmp_path):
    (code,) = _section_blocks("## AO numerics")
    res = _run(code + "\nassert cmd.shape == (n_act,)\nprint('OK')\n", tmp_path, stream_dir)
    assert res.returncode == 0 and "OK" in res.stdout, res.stderr[-3000:]


def test_component_snippets_run_as_written(stream_dir, tmp_path, procs):
    """The component class, and the events of a counter started as the section says."""
    from dao.testing import free_port, wait_for

    port = free_port()
    p = subprocess.Popen([sys.executable, "-m", "dao.cli", "run", "dao.examples:Counter",
                          "--port", str(port), "--name", "counter"],
                         env={**__import__("os").environ, "DAO_SHM_DIR": stream_dir},
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(p)
    import dao

    def answers() -> bool:
        with dao.ComponentClient(port, timeout=0.5) as c:
            try:
                return c.ping() > 0
            except dao.DaoError:
                return False

    wait_for(answers, timeout=30, what="the counter component")
    blocks = _section_blocks("## Components")
    assert len(blocks) == 2
    code = "\n".join(blocks).replace("5555", str(port)) + "\nprint('OK', c.state())\n"
    res = _run(code, tmp_path, stream_dir)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "OK Standby" in res.stdout


def test_workbench_snippet_runs_as_written(stream_dir, tmp_path):
    """The widgets are made (here outside a notebook: the same objects a cell shows)."""
    (code,) = _section_blocks("## The workbench in a notebook")
    res = _run(code + "\nprint('OK', type(dash).__name__)\ndash.close()\nao.close()\n",
               tmp_path, stream_dir)
    assert res.returncode == 0 and "OK LoopDashboard" in res.stdout, res.stderr[-3000:]
