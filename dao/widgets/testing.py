"""Headless JupyterLab in Debian Chromium, for the tests and benchmarks of the widgets.

:class:`JupyterLab` runs the ``jupyter lab`` of this interpreter on a free loopback port, in a
folder of the caller's choosing, with its own configuration, data, runtime and settings folders
(so nothing of the user's setup leaks in and no pop-up covers the page), and stops it, kernels
included, at exit. :class:`Browser` drives the Debian ``chromium`` through the Debian
``chromium-driver`` with selenium: it opens a notebook, runs its cells with Shift+Enter as a
user would, waits for what the page should show, and keeps screenshots.

Nothing is downloaded and nothing beyond the loopback interface is reached: both binaries are
given by path (so selenium-manager never runs), JupyterLab's news and update checks are off, and
Chromium resolves no host name but ``127.0.0.1``. The Debian packages are installed by
``scripts/system-deps.sh test``.

Examples
--------
>>> with JupyterLab(folder) as lab, Browser() as browser:  # doctest: +SKIP
...     browser.open_notebook(lab, "probe.ipynb")
...     browser.run_all()
...     browser.wait_for(".probe-count")
...     browser.screenshot("probe")
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "CHROMEDRIVER",
    "CHROMIUM",
    "Browser",
    "BrowserTimeout",
    "CellError",
    "JupyterLab",
    "LAB_SETTINGS",
    "STOCK_SERVER_CONFIG",
    "artifacts_dir",
    "browser_available",
    "write_notebook",
]

CHROMIUM = "/usr/bin/chromium"
"""The Debian ``chromium`` launcher."""
CHROMEDRIVER = "/usr/bin/chromedriver"
"""The Debian ``chromium-driver``."""

#: Chromium switches: headless, no sandbox (root in containers), and nothing that phones home.
CHROMIUM_ARGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--disable-dev-shm-usage",
    "--disable-features=Translate,MediaRouter,OptimizationHints,AutofillServerCommunication",
    "--password-store=basic",
    "--no-proxy-server",
    # every host name but the loopback address fails at once: nothing can leave the machine
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
)

#: JupyterLab user settings of the harness: no news, no update check, no toast over the page,
#: every cell in the DOM (no windowing), no autosave rewriting the notebook under test.
LAB_SETTINGS: dict[str, dict[str, Any]] = {
    "@jupyterlab/apputils-extension:notification": {
        "fetchNews": "false",
        "checkForUpdates": False,
        "doNotDisturbMode": True,
    },
    "@jupyterlab/notebook-extension:tracker": {"windowingMode": "none"},
    "@jupyterlab/docmanager-extension:plugin": {"autosave": False},
    "@jupyterlab/extensionmanager-extension:plugin": {"enabled": False},
}

_ENV_MARK = "DAO_JUPYTERLAB_HARNESS"

#: Server configuration that switches dao's server extension off (:mod:`dao.widgets.server`:
#: kernel websockets with ``TCP_NODELAY``), to measure JupyterLab as it comes.
STOCK_SERVER_CONFIG = {"ServerApp": {"jpserver_extensions": {"dao.widgets.server": False}}}


def browser_available() -> str | None:
    """Why the browser tests cannot run here, or ``None`` when they can.

    Returns
    -------
    str or None
        A reason naming what is missing (for ``pytest.skip``), or ``None``.
    """
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            return f"{path} missing: install the Debian package {package} " \
                   "(scripts/system-deps.sh test)"
    for module in ("selenium", "jupyterlab"):
        try:
            __import__(module)
        except ImportError:
            return f"python package {module} missing (pip install -e .[notebook,test])"
    return None


def artifacts_dir(default: str | os.PathLike[str] | None = None) -> Path:
    """The folder for screenshots and logs: ``$DAO_TEST_ARTIFACTS``, else ``default``, else a
    fresh temporary folder. It is created if missing.

    Parameters
    ----------
    default : path-like, optional
        Used when ``$DAO_TEST_ARTIFACTS`` is not set.

    Returns
    -------
    pathlib.Path
    """
    folder = os.environ.get("DAO_TEST_ARTIFACTS") or default
    path = Path(folder) if folder else Path(tempfile.mkdtemp(prefix="dao-artifacts-"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_notebook(path: str | os.PathLike[str], cells: list[str],
                   markdown: str | None = None) -> Path:
    """Write a notebook of code ``cells`` (their sources, stripped), on the ``python3``
    kernel, after an optional ``markdown`` cell; return its path."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.cells = ([nbformat.v4.new_markdown_cell(markdown)] if markdown else []) + [
        nbformat.v4.new_code_cell(src.strip()) for src in cells]
    nbformat.write(nb, path)
    return Path(path)


def _tail(text: str, n: int) -> str:
    return text if len(text) <= n else "..." + text[-n:]


# ---------------------------------------------------------------------------------------------
# JupyterLab server


class JupyterLab:
    """A ``jupyter lab`` server on ``127.0.0.1``, for one test or benchmark.

    The server is the ``jupyterlab`` of this interpreter (``sys.executable -m jupyterlab``) and
    serves ``root``. It has a random token, its own ``JUPYTER_CONFIG_DIR``,
    ``JUPYTER_DATA_DIR``, ``JUPYTER_RUNTIME_DIR``, ``IPYTHONDIR``, user-settings and workspaces
    folders under a temporary folder (its log, ``lab.log``, is there too), and
    ``window.jupyterapp`` exposed to the page. Use it as a context manager, or call
    :meth:`start` and :meth:`stop`.

    Parameters
    ----------
    root : path-like
        The folder the server serves (notebook paths are relative to it).
    timeout : float
        Seconds to wait for ``/api/status`` to answer.
    settings : mapping, optional
        JupyterLab user settings, ``{plugin id: {key: value}}``, merged over
        :data:`LAB_SETTINGS`.
    env : mapping, optional
        Extra environment variables for the server and its kernels.
    args : sequence of str
        Extra command-line arguments for ``jupyter lab``.
    tcp_nodelay : bool
        Kernel websockets without Nagle's delay, as dao's server extension sets them up
        (:mod:`dao.widgets.server`, enabled where dao is installed; the default); False
        switches the extension off (:data:`STOCK_SERVER_CONFIG`), as in a JupyterLab without
        dao.

    Attributes
    ----------
    port : int
        The port it listens on (known once started).
    token : str
        Its authentication token.
    workdir : pathlib.Path
        Its private temporary folder (removed by :meth:`stop`).
    log_path : pathlib.Path
        Its log file (inside ``workdir``; copy it before :meth:`stop` to keep it).
    """

    def __init__(self, root: str | os.PathLike[str], *, timeout: float = 180.0,
                 settings: Mapping[str, Mapping[str, Any]] | None = None,
                 env: Mapping[str, str] | None = None, args: Sequence[str] = (),
                 tcp_nodelay: bool = True) -> None:
        self.root = Path(root).resolve()
        self.timeout = timeout
        self.token = secrets.token_hex(24)
        self.port = 0
        self.settings = {k: dict(v) for k, v in LAB_SETTINGS.items()}
        for plugin, values in (settings or {}).items():
            self.settings.setdefault(plugin, {}).update(values)
        self.extra_env = dict(env or {})
        self.extra_args = list(args)
        self.tcp_nodelay = tcp_nodelay
        self.mark = secrets.token_hex(8)
        self.workdir: Path | None = None
        self.log_path: Path | None = None
        self.process: subprocess.Popen | None = None
        self._log_file = None

    # -- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> JupyterLab:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> JupyterLab:
        """Start the server and wait until ``/api/status`` answers.

        Returns
        -------
        JupyterLab
            ``self``.

        Raises
        ------
        RuntimeError
            The server exited, or did not answer within ``timeout`` s; the message ends with
            the tail of its log. The server is stopped before raising.
        """
        if self.process is not None:
            raise RuntimeError("this JupyterLab is already started")
        if not self.root.is_dir():
            raise FileNotFoundError(f"JupyterLab root folder {self.root} does not exist")
        self.workdir = Path(tempfile.mkdtemp(prefix="dao-lab-"))
        try:
            self._launch()
            self._wait_ready()
        except BaseException:
            self.stop(keep_workdir=True)
            raise
        return self

    def _launch(self) -> None:
        from dao.testing import free_port

        assert self.workdir is not None
        dirs = {name: self.workdir / name for name in
                ("config", "data", "runtime", "ipython", "settings", "workspaces")}
        for d in dirs.values():
            d.mkdir()
        for plugin, values in self.settings.items():
            package, _, name = plugin.partition(":")
            path = dirs["settings"] / package / f"{name}.jupyterlab-settings"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values, indent=1))
        if not self.tcp_nodelay:
            (dirs["config"] / "jupyter_server_config.json").write_text(
                json.dumps(STOCK_SERVER_CONFIG))
        env = dict(os.environ)
        env.update(
            JUPYTER_CONFIG_DIR=str(dirs["config"]),
            JUPYTER_DATA_DIR=str(dirs["data"]),
            JUPYTER_RUNTIME_DIR=str(dirs["runtime"]),
            JUPYTER_PREFER_ENV_PATH="1",
            IPYTHONDIR=str(dirs["ipython"]),
            JUPYTER_PLATFORM_DIRS="0",
            PYDEVD_DISABLE_FILE_VALIDATION="1",
            BROWSER="true",  # were a browser ever opened, it would be /bin/true
            NO_PROXY="127.0.0.1,localhost",
            no_proxy="127.0.0.1,localhost",
        )
        env.update(self.extra_env)
        env[_ENV_MARK] = self.mark  # inherited by the kernels: found and ended by stop()
        self.port = free_port()
        cmd = [
            sys.executable, "-m", "jupyterlab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=50",
            f"--ServerApp.root_dir={self.root}",
            f"--IdentityProvider.token={self.token}",
            "--ServerApp.terminals_enabled=False",
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.expose_app_in_browser=True",
            f"--LabApp.user_settings_dir={dirs['settings']}",
            f"--LabApp.workspaces_dir={dirs['workspaces']}",
            "--MappingKernelManager.cull_idle_timeout=0",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")
        cmd += self.extra_args
        self.log_path = self.workdir / "lab.log"
        self._log_file = open(self.log_path, "wb")  # noqa: SIM115 (closed by stop())
        self.process = subprocess.Popen(cmd, cwd=self.root, env=env, stdin=subprocess.DEVNULL,
                                        stdout=self._log_file, stderr=subprocess.STDOUT,
                                        start_new_session=True)

    def _wait_ready(self) -> None:
        assert self.process is not None and self.workdir is not None
        end = time.monotonic() + self.timeout
        runtime = self.workdir / "runtime"
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with status {self.process.returncode} "
                                   f"before answering; its log ends:\n{self.log_tail()}")
            # the port it really took (it moves on when the chosen one was taken meanwhile)
            for info in runtime.glob(f"jpserver-{self.process.pid}.json"):
                with contextlib.suppress(OSError, ValueError, KeyError):
                    self.port = int(json.loads(info.read_text())["port"])
            with contextlib.suppress(OSError, ValueError):
                status = self.api("status", timeout=5)
                if isinstance(status, dict) and "started" in status:
                    return
            if time.monotonic() > end:
                raise RuntimeError(f"jupyter lab did not answer /api/status on port {self.port} "
                                   f"within {self.timeout:g} s; its log ends:\n{self.log_tail()}")
            time.sleep(0.25)

    def stop(self, keep_workdir: bool = False) -> None:
        """Stop the server and its kernels (idempotent).

        The kernels are shut down through the API, then the server gets SIGTERM, then SIGKILL
        with its whole process group; any process still carrying this server's environment
        mark (a kernel, a child of a kernel) is killed last.

        Parameters
        ----------
        keep_workdir : bool
            Keep the temporary folder (with the log) instead of removing it.
        """
        p = self.process
        if p is not None and p.poll() is None:
            with contextlib.suppress(Exception):
                for kernel in self.api("kernels", timeout=5) or ():
                    self.api(f"kernels/{kernel['id']}", method="DELETE", timeout=15)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                pass
        if p is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(10)
        for pid in _marked_pids(self.mark):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        self.process = None
        if self.workdir is not None and not keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- queries -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The server's base URL, ``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    def lab_url(self, path: str = "") -> str:
        """The URL that opens ``path`` (relative to ``root``) in JupyterLab, token included.

        Parameters
        ----------
        path : str
            A file or folder under ``root``; empty for the lab's home.
        """
        path = str(path).replace(os.sep, "/").lstrip("/")
        quoted = urllib.parse.quote(path)
        tail = f"/lab/tree/{quoted}" if path else "/lab"
        return f"{self.url}{tail}?token={self.token}"

    def api(self, path: str, *, method: str = "GET", body: Any = None,
            timeout: float = 10.0) -> Any:
        """Call the server's REST API (``/api/<path>``) and decode its JSON answer.

        Parameters
        ----------
        path : str
            E.g. ``"status"``, ``"kernels"``, ``"sessions"``.
        method : str
            HTTP method.
        body : object, optional
            Sent as JSON.
        timeout : float
            Seconds for the request.

        Returns
        -------
        object
            The decoded answer, ``None`` when empty.
        """
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.url}/api/{path.lstrip('/')}", data=data,
                                         method=method)
        request.add_header("Authorization", f"token {self.token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=timeout) as answer:
            raw = answer.read()
        return json.loads(raw) if raw else None

    def log_tail(self, n: int = 4000) -> str:
        """The last ``n`` characters of the server's log."""
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        if self._log_file is not None:
            with contextlib.suppress(ValueError):
                self._log_file.flush()
        return _tail(self.log_path.read_bytes().decode(errors="replace"), n)


def _marked_pids(mark: str) -> list[int]:
    """The processes whose environment carries ``DAO_JUPYTERLAB_HARNESS=<mark>`` (Linux)."""
    needle = f"{_ENV_MARK}={mark}".encode()
    found = []
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            with contextlib.suppress(OSError):
                with open(f"/proc/{entry.name}/environ", "rb") as f:
                    if needle in f.read().split(b"\0"):
                        found.append(int(entry.name))
    return found


# ---------------------------------------------------------------------------------------------
# Browser


class BrowserTimeout(TimeoutError):
    """What the page should show did not show in time (the message names a screenshot)."""


class CellError(AssertionError):
    """A notebook cell run in the browser ended with an error output."""


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

# the notebook JupyterLab shows (window.jupyterapp is exposed by JupyterLab's flag)
_JS_PANEL = """
const app = window.jupyterapp;
const isNotebook = w => !!(w && w.content && w.sessionContext && w.content.widgets);
let panel = app && app.shell && app.shell.currentWidget;
if (!isNotebook(panel)) {  // the focus is elsewhere (a dialog just closed): the one shown
  panel = app && app.shell ? Array.from(app.shell.widgets('main')).find(
    w => isNotebook(w) && w.isVisible) || null : null;
}
"""

_JS_KERNEL = _JS_PANEL + """
if (panel) {
  const ctx = panel.sessionContext;
  const kernel = ctx.session && ctx.session.kernel;
  if (!kernel) return ctx.isReady ? 'no kernel' : 'starting';
  return kernel.connectionStatus === 'connected' ? kernel.status : kernel.connectionStatus;
}
const el = document.querySelector(
  '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator');
return el ? el.getAttribute('data-status') : null;
"""

_JS_CELL_ERRORS = _JS_PANEL + """
if (!panel) return [];
const cell = panel.content.widgets[arguments[0]];
if (!cell || !cell.model.outputs) return [];
return cell.model.outputs.toJSON().filter(o => o.output_type === 'error');
"""

# JupyterLab asks which kernel to start for a notebook without kernel metadata: the default
_JS_ACCEPT_KERNEL_DIALOG = """
for (const d of document.querySelectorAll('.jp-Dialog')) {
  const select = d.querySelector('.jp-Dialog-body select');
  const accept = d.querySelector('.jp-Dialog-button.jp-mod-accept');
  if (select && accept && /kernel/i.test(d.textContent)) {
    const preferred = Array.from(select.options).find(o => /python/i.test(o.textContent));
    if (preferred && select.value !== preferred.value) {
      select.value = preferred.value;
      select.dispatchEvent(new Event('change', {bubbles: true}));
    }
    accept.click();
    return true;
  }
}
return false;
"""

_CELLS = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell"


class Browser:
    """Headless Debian Chromium driven by selenium through the Debian chromedriver.

    The browser gets a fresh profile in a temporary folder, removed by :meth:`close`. Every
    wait has a timeout; when one runs out, :class:`BrowserTimeout` names a screenshot and ends
    with the tail of the page's visible text.

    Parameters
    ----------
    artifacts : path-like, optional
        Where screenshots (and the chromedriver log) go; default :func:`artifacts_dir`.
    timeout : float
        Default seconds for the waits.
    window_size : tuple of int
        The window's width and height in CSS pixels.
    chromium, chromedriver : str
        The browser and driver executables.
    args : iterable of str
        Extra Chromium switches.
    """

    def __init__(self, artifacts: str | os.PathLike[str] | None = None, *, timeout: float = 60.0,
                 window_size: tuple[int, int] = (1400, 1000), chromium: str = CHROMIUM,
                 chromedriver: str = CHROMEDRIVER, args: Iterable[str] = ()) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        for path, package in ((chromium, "chromium"), (chromedriver, "chromium-driver")):
            if not os.access(path, os.X_OK):
                raise FileNotFoundError(f"{path} missing: install the Debian package {package} "
                                        "(scripts/system-deps.sh test); nothing is downloaded")
        # both paths are given, so selenium-manager is skipped; were it ever run, offline
        os.environ.setdefault("SE_OFFLINE", "true")
        self.timeout = timeout
        self.artifacts = artifacts_dir(artifacts)
        self.profile = Path(tempfile.mkdtemp(prefix="dao-chromium-"))
        self._shots = 0
        self.lost_keys = 0  # Shift+Enter presses that did not start their cell (pressed again)
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for arg in (*CHROMIUM_ARGS, f"--window-size={window_size[0]},{window_size[1]}",
                    f"--user-data-dir={self.profile / 'profile'}", *args):
            options.add_argument(arg)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        with warnings.catch_warnings():  # deprecated, but webdriver.Chrome takes no
            warnings.simplefilter("ignore", DeprecationWarning)  # ClientConfig to replace it
            options.ignore_local_proxy_environment_variables()  # loopback: never via a proxy
        service = Service(chromedriver, log_output=str(self.profile / "chromedriver.log"),
                          env={**os.environ, "NO_PROXY": "127.0.0.1,localhost"})
        try:
            self.driver = webdriver.Chrome(service=service, options=options)
        except BaseException:
            shutil.rmtree(self.profile, ignore_errors=True)
            raise
        self.driver.set_page_load_timeout(max(timeout, 120.0))
        self.driver.set_script_timeout(max(timeout, 60.0))

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Quit the browser and remove its profile (idempotent)."""
        driver = self.__dict__.pop("driver", None)
        if driver is not None:
            with contextlib.suppress(Exception):
                driver.quit()
        shutil.rmtree(self.profile, ignore_errors=True)

    # -- generic page access -------------------------------------------------------------------

    def js(self, script: str, *args: Any) -> Any:
        """Run JavaScript in the page (``return`` gives a value back) and return its value."""
        return self.driver.execute_script(script, *args)

    def find(self, css: str) -> Any:
        """The first element matching ``css``, or ``None``."""
        from selenium.webdriver.common.by import By

        found = self.driver.find_elements(By.CSS_SELECTOR, css)
        return found[0] if found else None

    def find_all(self, css: str) -> list:
        """All elements matching ``css``."""
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def text(self, css: str) -> str | None:
        """The text content of the first element matching ``css`` (``None`` if there is none).

        ``textContent`` rather than selenium's visible text, so that an element scrolled out of
        view still reads.
        """
        return self.js("const e = document.querySelector(arguments[0]);"
                       "return e ? e.textContent : null;", css)

    def texts(self, css: str) -> list[str]:
        """The text content of every element matching ``css``."""
        return self.js("return Array.from(document.querySelectorAll(arguments[0]),"
                       " e => e.textContent);", css)

    def printed(self, marker: str, timeout: float = 30.0) -> Any:
        """The JSON a cell printed after ``marker`` (``print(marker, json.dumps(...))``), read
        from the notebook's output areas (never from the cells' code), waiting for it."""
        def find():
            outs = [t for t in self.texts(".jp-OutputArea-output") if marker in t]
            return outs[-1] if outs else None

        text = self.wait_for(find, timeout, message=f"the output {marker}")
        return json.loads(text.rsplit(marker, 1)[1].strip().split("\n", 1)[0])

    def page_text(self, n: int = 2000) -> str:
        """The last ``n`` characters of the page's visible text."""
        try:
            return _tail(self.js("return document.body ? document.body.innerText : '';") or "", n)
        except Exception as err:  # the page may be gone: say so rather than hide the timeout
            return f"(page text unreadable: {err!r})"

    def console(self) -> list[dict]:
        """The browser console's entries since the last call (level, message, timestamp)."""
        try:
            return self.driver.get_log("browser")
        except Exception:
            return []

    def widget_errors(self) -> list[str]:
        """The text of the widget views that failed to render (ipywidgets' red "Click to show
        javascript error." boxes: e.g. a jupyter_bokeh view with no BokehJS loaded)."""
        return [" ".join(t.split()) for t in self.texts(".jupyter-widgets-error-widget")]

    def screenshot(self, name: str | os.PathLike[str] | None = None) -> Path:
        """Save a PNG of the window and return its path.

        Parameters
        ----------
        name : str or path-like, optional
            A bare name is saved as ``<artifacts>/<name>.png``; a path with a folder is used as
            is; by default ``<artifacts>/shot-<n>.png``.
        """
        self._shots += 1
        if name is None:
            path = self.artifacts / f"shot-{self._shots:03d}.png"
        else:
            path = Path(name)
            if path.parent == Path("."):
                path = self.artifacts / path
            if path.suffix != ".png":
                path = path.with_name(path.name + ".png")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.driver.save_screenshot(str(path))
        return path

    def fail(self, message: str) -> BrowserTimeout:
        """A :class:`BrowserTimeout` for ``message``, with a screenshot and the page's text."""
        try:
            shot = str(self.screenshot(f"timeout-{int(time.time() * 1000)}"))
        except Exception as err:
            shot = f"(no screenshot: {err!r})"
        return BrowserTimeout(f"{message}\nscreenshot: {shot}\npage text ends:\n"
                              f"{self.page_text()}")

    def wait_for(self, what: str | Callable[[], Any], timeout: float | None = None, *,
                 interval: float = 0.1, message: str = "") -> Any:
        """Wait until a CSS selector matches a displayed element, or a callable returns
        something true.

        Parameters
        ----------
        what : str or callable
            A CSS selector, or a function of no argument (exceptions count as false).
        timeout : float, optional
            Seconds; default the browser's ``timeout``.
        interval : float
            Seconds between tries.
        message : str
            What is awaited, for the error.

        Returns
        -------
        object
            The element found, or the callable's value.

        Raises
        ------
        BrowserTimeout
            Not met in time; names a screenshot and shows the page's text.
        """
        timeout = self.timeout if timeout is None else timeout
        if isinstance(what, str):
            css = what

            def check() -> Any:
                for element in self.find_all(css):
                    if element.is_displayed():
                        return element
                return None
        else:
            check = what
        end = time.monotonic() + timeout
        last: BaseException | None = None
        while True:
            try:
                value = check()
                if value:
                    return value
            except Exception as err:  # stale elements, a page being rebuilt...
                last = err
            if time.monotonic() > end:
                label = message or (what if isinstance(what, str) else getattr(
                    what, "__name__", "condition"))
                extra = f" (last error: {last!r})" if last else ""
                raise self.fail(f"{label} not met within {timeout:g} s{extra}")
            time.sleep(interval)

    def scroll_to(self, css: str, timeout: float | None = None) -> Any:
        """Wait for ``css`` to be displayed, scroll it to the middle of the window, return it."""
        element = self.wait_for(css, timeout)
        self.js("arguments[0].scrollIntoView({block: 'center'});", element)
        return element

    def click(self, css: str, timeout: float | None = None) -> None:
        """Wait for ``css`` to be displayed, scroll it into view and click it."""
        self.scroll_to(css, timeout).click()

    def press(self, *keys: str, shift: bool = False) -> None:
        """Send keys to whatever has the focus (``shift`` held down if asked)."""
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.keys import Keys

        chain = ActionChains(self.driver)
        if shift:
            chain.key_down(Keys.SHIFT)
        chain.send_keys(*keys)
        if shift:
            chain.key_up(Keys.SHIFT)
        chain.perform()

    # -- JupyterLab ----------------------------------------------------------------------------

    def open_notebook(self, lab: JupyterLab, relpath: str | os.PathLike[str],
                      timeout: float | None = None) -> None:
        """Open a notebook of ``lab`` and wait until its cells show and its kernel is idle.

        Parameters
        ----------
        lab : JupyterLab
            A started server.
        relpath : str or path-like
            The notebook's path relative to ``lab.root``.
        timeout : float, optional
            Seconds for the page and the kernel (default ``max(timeout, 180)``: a kernel starts
            slowly on a loaded machine).

        Notes
        -----
        A notebook without kernel metadata makes JupyterLab ask for a kernel: the dialog's
        default choice (the ``python3`` of the server) is accepted.
        """
        timeout = max(self.timeout, 180.0) if timeout is None else timeout
        end = time.monotonic() + timeout
        self.driver.get(lab.lab_url(str(relpath)))
        self.wait_for(_CELLS, timeout, message=f"the cells of {relpath}")
        self.wait_kernel_idle(max(1.0, end - time.monotonic()))

    def kernel_status(self) -> str | None:
        """The kernel status of the notebook shown (``'idle'``, ``'busy'``, ``'starting'``...)."""
        return self.js(_JS_KERNEL)

    def wait_kernel_idle(self, timeout: float | None = None, settle: float = 0.5) -> None:
        """Wait until the kernel of the notebook shown is connected and idle for ``settle`` s.

        A "Select Kernel" dialog met meanwhile (a notebook without kernel metadata) is
        answered with its default choice, the server's preferred kernel.
        """
        timeout = max(self.timeout, 180.0) if timeout is None else timeout
        since: list[float] = []
        status: list[str | None] = [None]

        def idle() -> bool:
            status[0] = self.kernel_status()
            if status[0] != "idle":
                since.clear()
                self.js(_JS_ACCEPT_KERNEL_DIALOG)
                return False
            since[:] = since or [time.monotonic()]
            return time.monotonic() - since[0] >= settle

        try:
            self.wait_for(idle, timeout, interval=0.1, message="kernel idle")
        except BrowserTimeout as err:
            raise BrowserTimeout(f"(kernel status {status[0]!r}) {err}") from None

    def _safe_kernel_status(self) -> str | None:
        try:
            return self.kernel_status()
        except Exception:
            return None

    def cells(self) -> list:
        """The cell elements of the notebook shown."""
        return self.find_all(_CELLS)

    def _prompt(self, index: int) -> str:
        return self.js(
            "const c = document.querySelectorAll(arguments[0])[arguments[1]];"
            "const p = c && c.querySelector('.jp-InputPrompt');"
            "return p ? p.textContent.trim() : '';", _CELLS, index) or ""

    def cell_errors(self, index: int) -> list[dict]:
        """The error outputs (``ename``, ``evalue``, ``traceback``) of cell ``index``."""
        return self.js(_JS_CELL_ERRORS, index) or []

    def select_cell(self, index: int, timeout: float = 20.0) -> None:
        """Make cell ``index`` the active one, in command mode, with the keyboard focus on the
        notebook (so that keys go to it).

        Through ``window.jupyterapp`` when exposed (deterministic), else by a click on the
        cell's prompt.
        """
        selected = self.js(_JS_PANEL + """
            if (!panel) return null;
            const nb = panel.content, i = arguments[0];
            if (i >= nb.widgets.length) return false;
            nb.activeCellIndex = i; nb.deselectAll(); nb.mode = 'command';
            nb.activeCell.node.scrollIntoView({block: 'center'});
            nb.node.focus();
            return nb.activeCellIndex === i;""", index)
        if selected is None:
            cell = self.cells()[index]
            prompt = cell.find_elements("css selector", ".jp-InputPrompt") or [cell]
            self.js("arguments[0].scrollIntoView({block: 'center'});", prompt[0])
            try:
                prompt[0].click()
            except Exception:  # covered or not interactable: click where it is
                from selenium.webdriver.common.action_chains import ActionChains

                ActionChains(self.driver).move_to_element(prompt[0]).click().perform()

        def ready() -> bool:
            return bool(self.js(
                "const c = document.querySelectorAll(arguments[0])[arguments[1]];"
                "const nb = c && c.closest('.jp-Notebook');"
                "return !!(c && c.classList.contains('jp-mod-active')"
                " && nb.classList.contains('jp-mod-commandMode')"
                " && nb.contains(document.activeElement));", _CELLS, index))

        self.wait_for(ready, timeout, message=f"cell {index} selected with the focus")

    def run_cell(self, index: int, timeout: float | None = None, *, wait: bool = True,
                 check: bool = True) -> None:
        """Select cell ``index`` and press Shift+Enter, as a user would.

        A key press that got lost (the prompt did not turn to ``[*]`` within 15 s) is pressed
        again, up to three times; one that got through is never repeated.

        Parameters
        ----------
        index : int
            The cell's position (0 is the first).
        timeout : float, optional
            Seconds for the cell to finish (default ``max(timeout, 120)``).
        wait : bool
            Wait until the cell's prompt shows its execution count (code cells).
        check : bool
            Raise :class:`CellError` if the cell ends with an error output.

        Raises
        ------
        BrowserTimeout
            The cell did not start or finish in time.
        CellError
            ``check`` and the cell ended with an error.
        """
        from selenium.webdriver.common.keys import Keys

        timeout = max(self.timeout, 120.0) if timeout is None else timeout
        cells = self.cells()
        if not 0 <= index < len(cells):
            raise IndexError(f"cell {index} of {len(cells)}")
        code = "jp-CodeCell" in (cells[index].get_attribute("class") or "")
        before = self._prompt(index)

        def started() -> bool:
            if code:
                return self._prompt(index) != before  # '[*]:' at once, then '[n]:'
            return self.js(  # a markdown cell: rendered, and the next one selected
                "const c = document.querySelectorAll(arguments[0])[arguments[1]];"
                "return !!c && !c.classList.contains('jp-mod-active');", _CELLS, index)

        for attempt in range(3):
            self.select_cell(index)
            self.press(Keys.ENTER, shift=True)
            try:
                self.wait_for(started, 15, interval=0.05,
                              message=f"cell {index} started (prompt was {before!r})")
                break
            except BrowserTimeout:
                if attempt == 2:
                    raise
                self.lost_keys += 1
        if not (wait and code):
            return

        def done() -> bool:
            text = self._prompt(index)
            return bool(re.fullmatch(r"\[\d+\]:?", text)) and text != before

        self.wait_for(done, timeout, interval=0.05,
                      message=f"cell {index} finished (prompt was {before!r})")
        if check:
            errors = self.cell_errors(index)
            if errors:
                e = errors[0]
                trace = _ANSI.sub("", "\n".join(e.get("traceback", ())))
                raise CellError(f"cell {index}: {e.get('ename')}: {e.get('evalue')}\n{trace}")

    def run_all(self, timeout: float | None = None, *, check: bool = True) -> None:
        """Run every cell, top to bottom, with Shift+Enter, each after the previous finished.

        Parameters
        ----------
        timeout : float, optional
            Seconds for each cell.
        check : bool
            Stop with :class:`CellError` at the first cell that ends with an error.
        """
        for index in range(len(self.cells())):
            self.run_cell(index, timeout, check=check)
