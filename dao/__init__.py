"""dao: a Python-first adaptive-optics real-time workbench.

Layers, bottom to top (nothing below imports anything above): the C stream core
(:mod:`dao._shm`), :mod:`dao.streams`, :mod:`dao.recon` (Numba numerics), :mod:`dao.runtime`
(state machine, components, supervisor), :mod:`dao.hw` (devices and the simulated bench),
:mod:`dao.loop` (the AO loop) and :mod:`dao.latency`.

Shared-memory image streams byte-compatible with the Durham AO (DAO) C library, with a C core
(:mod:`dao._shm`) under a Python API that keeps the Durham names::

    import numpy as np, dao
    s = dao.shm("wfs", np.zeros((64, 64), np.float32))   # creates /tmp/wfs.im.shm
    frame = dao.shm("wfs").get_data(check=True, timeout=1.0)
"""

from dao.errors import (
    DaoError,
    DaoWarning,
    NotAStreamError,
    SemaphoreConflictError,
    StreamBusyError,
    StreamError,
    StreamFormatError,
    StreamMismatchError,
    StreamNotFoundError,
    StreamTimeout,
)
from dao.streams import (
    Frame,
    FrameInfo,
    Frames,
    Keywords,
    combine,
    list_streams,
    remove,
    shm,
    stream_path,
)

__version__ = "0.1.0"

# Heavier parts (ZeroMQ, protobuf, Numba) load on first use, so ``import dao`` stays fast.
_LAZY = {
    "Component": "dao.runtime",
    "Input": "dao.runtime",
    "Output": "dao.runtime",
    "ComponentError": "dao.runtime",
    "Parameter": "dao.runtime",
    "ParameterError": "dao.runtime",
    "State": "dao.runtime",
    "Event": "dao.runtime",
    "StateMachine": "dao.runtime",
    "IllegalTransition": "dao.runtime",
    "HookError": "dao.runtime",
    "RTThread": "dao.runtime",
    "ThreadTable": "dao.runtime",
    "SignalTable": "dao.runtime",
    "ComponentClient": "dao.runtime",
    "CommandServer": "dao.runtime",
    "CommandFailed": "dao.runtime",
    "CommandTimeout": "dao.runtime",
    "Supervisor": "dao.runtime",
    "TRACE": "dao.runtime",
    "LogBusHandler": "dao.runtime",
    "LogForwarder": "dao.runtime",
    "LogSubscriber": "dao.runtime",
    "AOLoop": "dao.loop",
    "run_loop": "dao.loop",
}
#: Subpackages and modules reachable as attributes (``from dao import telemetry``).
_SUBMODULES = {
    "recon": "dao.recon",
    "testing": "dao.testing",
    "loop": "dao.loop",
    "hw": "dao.hw",
    "runtime": "dao.runtime",
    "streams": "dao.streams",
    "latency": "dao.latency",
    "telemetry": "dao.streams.telemetry",
    "labels": "dao.streams.labels",
}


def __getattr__(name: str):
    import importlib

    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(_SUBMODULES[name])
    raise AttributeError(f"module 'dao' has no attribute {name!r}")

__all__ = [
    *_LAZY,
    "DaoError",
    "DaoWarning",
    "Frame",
    "FrameInfo",
    "Frames",
    "Keywords",
    "NotAStreamError",
    "SemaphoreConflictError",
    "StreamBusyError",
    "StreamError",
    "StreamFormatError",
    "StreamMismatchError",
    "StreamNotFoundError",
    "StreamTimeout",
    "combine",
    "list_streams",
    "remove",
    "shm",
    "stream_path",
]
