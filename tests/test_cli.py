"""The dao command, run as a separate process like a user would."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np

import dao


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dao.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=os.environ.copy())


def test_ls_lists_streams_with_rate(name, stream_dir):
    s = dao.shm(name, np.zeros((4, 6), np.uint16), depth=3)
    with open(os.path.join(stream_dir, "broken.im.shm"), "wb") as f:
        f.write(b"not a stream")
    res = run("ls", "--interval", "0")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["NAME", "SHAPE", "DTYPE", "DEPTH", "COUNTER", "AGE", "RATE",
                                "SPAN", "OWNER"]
    row = next(line for line in lines if line.startswith(name)).split()
    assert row[1:5] == ["4x6", "uint16", "3", "0"]  # no frame written yet
    assert row[-2:] == ["pid", str(os.getpid())]  # this process writes it
    assert any("broken.im.shm: unreadable" in line for line in lines)
    s.close()


def test_info_shows_metadata_and_keywords(name):
    s = dao.shm(name, np.zeros(5, np.float64))
    s.keywords.set("gain", 0.5, "integrator gain")
    s.set_data(np.ones(5), cnt2=12)
    res = run("info", name)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert s.path in out and "(5,)" in out and "float64" in out
    assert "cnt0              1" in out and "cnt2              12" in out
    assert "gain" in out and "integrator gain" in out


def test_info_shows_fifo_history(name):
    s = dao.shm(name, np.zeros(2, np.float32), depth=4)
    for _ in range(5):
        s.set_data(np.zeros(2, np.float32))
        time.sleep(0.01)
    out = run("info", name).stdout
    # five frames in slots 0 1 2 3 0 (creating writes none)
    assert "newest slot       0 of 4" in out and "history           4 frames spanning" in out


def test_rm_and_missing(name):
    s = dao.shm(name, np.zeros(2, np.int32))
    path = s.path
    s.close()
    res = run("rm", name)
    assert res.returncode == 0 and not os.path.exists(path)
    res = run("rm", name)
    assert res.returncode == 1 and "no stream" in res.stderr
    res = run("info", name)
    assert res.returncode == 1 and "no stream" in res.stderr and "Traceback" not in res.stderr


def test_watch_reports_rate(name):
    s = dao.shm(name, np.zeros(2, np.float32))
    p = subprocess.Popen([sys.executable, "-m", "dao.cli", "watch", name, "--interval", "0.3",
                          "--count", "2"], stdout=subprocess.PIPE, text=True)
    t_end = time.monotonic() + 60
    while p.poll() is None and time.monotonic() < t_end:
        s.set_data(np.zeros(2, np.float32))
        time.sleep(0.002)
    out = p.communicate(timeout=10)[0].splitlines()
    assert len(out) == 2 and all("counter" in line and "Hz" in line for line in out)
    rate = float(out[-1].split("rate ")[1].split()[0])
    assert rate > 0  # frames were written while it watched (how fast: not on a loaded CI)


def test_demo_runs_and_reports(tmp_path):
    res = run("demo", "--frames", "300", "--rate", "1000")
    assert res.returncode == 0, res.stderr
    assert "semaphore" in res.stdout and "spin" in res.stdout and "p99" in res.stdout
    assert " 0 torn" in res.stdout


def test_ls_dead_lists_only_dead_streams_and_rm_force_needs_dead(name):
    s = dao.shm(name, np.zeros(2, np.int32))  # live: this process writes it
    res = run("ls", "--dead", "--interval", "0")
    assert res.returncode == 0, res.stderr
    assert name not in res.stdout
    res = run("ls", "--interval", "0")
    assert res.returncode == 0 and name in res.stdout
    res = run("rm", "--force", name)
    assert res.returncode == 1 and "--force goes with --dead" in res.stderr
    assert os.path.exists(s.path)  # nothing removed


# -- dao supervise --------------------------------------------------------------------------------
def test_supervise_refuses_a_file_without_components_at_once(tmp_path):
    """A file it cannot use: exit 2 at once, saying which file and what to write."""
    cases = {
        "empty.toml": ("", "The file is empty"),
        "log.toml": ("[log]\nforward = false\n", "It has only [log]"),
        "misspelt.toml": ('[[components]]\nname = "a"\nclass = "dao.examples:Counter"\n',
                          "It has [[components]]: did you mean [[component]]?"),
        "single.toml": ('[component]\nname = "a"\nclass = "dao.examples:Counter"\n',
                        "[[component]] (two brackets)"),
        "noclass.toml": ('[[component]]\nname = "a"\n', "has no 'class'"),
        "broken.toml": ("[[component]\n", "is not valid TOML: Expected ']]'"),
    }
    for file, (text, why) in cases.items():
        path = tmp_path / file
        path.write_text(text)
        res = run("supervise", str(path), timeout=30)
        assert res.returncode == 2, (file, res.stderr)
        assert str(path) in res.stderr and why in res.stderr, (file, res.stderr)
        assert "Traceback" not in res.stderr and res.stdout == "", res.stderr
        if file != "broken.toml":  # that one: where the TOML is wrong
            assert "[[component]]" in res.stderr, res.stderr
    res = run("supervise", str(tmp_path / "empty.toml"), timeout=30)
    assert 'name = "counter"' in res.stderr and 'class = "dao.examples:Counter"' in res.stderr
    res = run("supervise", str(tmp_path / "nowhere.toml"), timeout=30)
    assert res.returncode == 2 and "nowhere.toml: no such file" in res.stderr


def test_supervise_says_which_component_did_not_start(tmp_path):
    path = tmp_path / "loop.toml"
    path.write_text('[[component]]\nname = "x"\nclass = "no_such_module:Thing"\n')
    res = run("supervise", str(path), timeout=60)
    assert res.returncode == 1, res.stderr
    assert "a component did not start: x exited with status 1 while starting" in res.stderr
    assert "cannot load no_such_module:Thing" in res.stderr  # the component's own words
    assert "Traceback" not in res.stderr


class Supervise:
    """``dao supervise FILE`` as a real process, its stdout and stderr read as they come."""

    def __init__(self, config: str, tmp_path):
        import threading

        path = tmp_path / "loop.toml"
        path.write_text(config)
        self.p = subprocess.Popen([sys.executable, "-m", "dao.cli", "supervise", str(path),
                                   "--interval", "0.2"], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=os.environ.copy())
        self.out: list[str] = []
        self.err: list[str] = []
        self.readers = [threading.Thread(target=self._read, args=(f, lines), daemon=True)
                        for f, lines in ((self.p.stdout, self.out), (self.p.stderr, self.err))]
        for t in self.readers:
            t.start()

    @staticmethod
    def _read(f, lines: list[str]) -> None:
        for line in f:
            lines.append(line)

    def wait_line(self, lines: list[str], text: str, timeout: float = 30.0) -> str:
        from dao.testing import wait_for

        return wait_for(lambda: next((x for x in lines if text in x), None), timeout=timeout,
                        what=f"a line with {text!r} (got {''.join(lines)[-3000:]!r})")

    def status(self) -> dict[str, dict]:
        """The components' status it printed once they were started, by name."""
        import json

        self.wait_line(self.out, "health events at")
        text = "".join(self.out)
        return {s["name"]: s for s in json.loads(text[:text.index("health events at")])}

    def finish(self, timeout: float = 30.0) -> int:
        """Its exit status, once it ended (SIGTERM first if it still runs)."""
        import signal

        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
        try:
            return self.p.wait(timeout)
        finally:
            if self.p.poll() is None:
                self.p.kill()
                self.p.wait(10)
            for t in self.readers:
                t.join(10)
            self.p.stdout.close()
            self.p.stderr.close()


def test_supervise_says_at_once_which_component_fails_and_why(tmp_path):
    """A component in Error: its name and the last line of its reason on stderr at once; a
    process that dies: said too; SIGTERM stops everything, exit 0."""
    import signal

    from dao.testing import unique_name

    cam, cnt = unique_name("cam"), unique_name("cnt")
    sup = Supervise(f"""
[[component]]
name = "{cam}"
class = "dao.examples:Counter"
state = "Running"
args = {{ period = 0.005 }}

[[component]]
name = "{cnt}"
class = "dao.examples:Counter"
""", tmp_path)
    try:
        st = sup.status()
        assert st[cam]["state"] == "Running" and st[cnt]["state"] == "Off"
        from dao.runtime.command import ComponentClient

        with ComponentClient(st[cam]["address"]) as c:
            c.fail("the shutter jammed\nRuntimeError: shutter stuck at 40%")
        line = sup.wait_line(sup.err, "is in Error", timeout=10)
        assert cam in line and line.rstrip().endswith("RuntimeError: shutter stuck at 40%")
        assert "ERROR" in line
        os.kill(st[cnt]["pid"], signal.SIGKILL)
        line = sup.wait_line(sup.err, f"{cnt} (pid {st[cnt]['pid']}) died", timeout=10)
        assert "status -9" in line
        sup.wait_line(sup.out, f"{cnt} (pid {st[cnt]['pid']}) died", timeout=10)
        assert sup.finish() == 0
    finally:
        sup.finish()
    err = "".join(sup.err)
    assert "Traceback" not in err and sum("is in Error" in x for x in sup.err) == 1, err


def test_supervise_stops_when_no_process_is_left_to_watch(tmp_path):
    """Every process ended and none restarts: said, exit 1 (never idle without a word)."""
    import signal

    from dao.testing import unique_name

    name = unique_name("one")
    sup = Supervise(f'[[component]]\nname = "{name}"\nclass = "dao.examples:Counter"\n',
                    tmp_path)
    try:
        pid = sup.status()[name]["pid"]
        os.kill(pid, signal.SIGKILL)
        assert sup.p.wait(30) == 1
    finally:
        sup.finish()
    err = "".join(sup.err)
    assert f"{name} (pid {pid}) died with status -9" in err
    assert "nothing left to watch" in err


def test_rm_finds_bare_names_in_dir(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    s = dao.shm(str(folder / "zz.im.shm"), np.zeros(3, np.float32))
    s.close()
    res = run("rm", "--dir", str(folder), "zz")
    assert res.returncode == 0, res.stderr
    assert not (folder / "zz.im.shm").exists()
