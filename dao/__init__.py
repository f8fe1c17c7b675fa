"""dao: a Python-first adaptive-optics real-time workbench.

Shared-memory image streams byte-compatible with the Durham AO (DAO) C library, with a C core
(:mod:`dao._shm`) under a Python API that keeps the Durham names::

    import numpy as np, dao
    s = dao.shm("wfs", np.zeros((64, 64), np.float32))   # creates /tmp/wfs.im.shm
    frame = dao.shm("wfs").get_data(check=True, timeout=1.0)
"""

from dao.errors import (
    DaoError,
    DaoWarning,
    SemaphoreConflictError,
    StreamError,
    StreamFormatError,
    StreamMismatchError,
    StreamNotFoundError,
    StreamTimeout,
)
from dao.shm import Frame, FrameInfo, Keywords, combine, list_streams, remove, shm, stream_path

__version__ = "0.1.0"

# Heavier parts (ZeroMQ, protobuf, Numba) load on first use, so ``import dao`` stays fast.
_LAZY = {
    "Component": "dao.component",
    "Input": "dao.component",
    "Output": "dao.component",
    "ComponentError": "dao.component",
    "Parameter": "dao.parameters",
    "ParameterError": "dao.parameters",
    "State": "dao.state",
    "Event": "dao.state",
    "StateMachine": "dao.state",
    "IllegalTransition": "dao.state",
    "HookError": "dao.state",
    "RTThread": "dao.rtthread",
    "ThreadTable": "dao.rtthread",
    "SignalTable": "dao.rtthread",
    "ComponentClient": "dao.command",
    "CommandServer": "dao.command",
    "CommandFailed": "dao.command",
    "CommandTimeout": "dao.command",
    "Supervisor": "dao.supervisor",
    "TRACE": "dao.logbus",
    "LogBusHandler": "dao.logbus",
    "LogForwarder": "dao.logbus",
    "LogSubscriber": "dao.logbus",
    "AOLoop": "dao.loop",
    "run_loop": "dao.loop",
}
_SUBMODULES = {"recon", "testing", "loop", "telemetry", "hw"}


def __getattr__(name: str):
    import importlib

    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"dao.{name}")
    raise AttributeError(f"module 'dao' has no attribute {name!r}")

__all__ = [
    *_LAZY,
    "DaoError",
    "DaoWarning",
    "Frame",
    "FrameInfo",
    "Keywords",
    "SemaphoreConflictError",
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
