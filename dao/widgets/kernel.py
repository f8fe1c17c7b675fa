"""Acknowledgements that reach the kernel while a cell runs: a kernel subshell for the views.

The browser's messages to a widget (a live view's acknowledgement of each frame) arrive on the
kernel's shell channel, which ipykernel handles between two cells only: while a cell runs (a
long exposure, say), the acknowledgements wait, and a view with its frames in flight stalls.
ipykernel 7 has subshells (Jupyter enhancement proposal 91): shell threads beside the main one,
and it routes a comm's incoming messages to the subshell that the comm names. The live views
of a kernel share one subshell, made on first use with a ``create_subshell_request`` sent to
the kernel's own control channel (the protocol's way, through its connection file), so their
acknowledgements are handled at once, cells running or not.

Where subshells are missing (an older ipykernel, or no kernel at all), :func:`ack_subshell`
returns None and the acknowledgements wait for the cell's end; views then send again after
their ``ack_timeout``.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

__all__ = ["ack_subshell", "route_to_subshell"]

log = logging.getLogger(__name__)

_LOCK = threading.Lock()
_SUBSHELL: dict[str, Any] = {}


def _kernel() -> Any:
    try:
        from ipykernel.kernelbase import Kernel
    except ImportError:
        return None
    return Kernel.instance() if Kernel.initialized() else None


def ack_subshell(timeout: float = 5.0) -> str | None:
    """The id of this kernel's subshell for the widgets (made on the first call).

    Returns
    -------
    str or None
        The subshell id; None outside a kernel, with a kernel without subshells, or if the
        kernel did not answer within ``timeout`` seconds (then never asked again).
    """
    with _LOCK:
        if "id" in _SUBSHELL:
            return _SUBSHELL["id"]
        _SUBSHELL["id"] = None
        kernel = _kernel()
        if kernel is None or not getattr(kernel, "_supports_kernel_subshells", False):
            return None
        try:
            _SUBSHELL["id"] = _create(timeout)
        except Exception as exc:  # the views still work, acknowledged between cells
            log.warning("dao.widgets: no kernel subshell for the views' acknowledgements (%s): "
                        "views wait for the end of a running cell", exc)
        return _SUBSHELL["id"]


def _create(timeout: float) -> str:
    from ipykernel.connect import get_connection_file
    from jupyter_client import BlockingKernelClient

    client = BlockingKernelClient()
    client.load_connection_file(get_connection_file())
    client.start_channels(shell=False, iopub=False, stdin=False, hb=False, control=True)
    try:
        msg = client.session.msg("create_subshell_request", {})
        client.control_channel.send(msg)
        while True:
            reply = client.control_channel.get_msg(timeout=timeout)
            if reply["parent_header"].get("msg_id") == msg["header"]["msg_id"]:
                break
        content = reply["content"]
        if content.get("status") != "ok" or not content.get("subshell_id"):
            raise RuntimeError(f"create_subshell_request failed: {content}")
        return str(content["subshell_id"])
    finally:
        client.stop_channels()


def route_to_subshell(widget: Any, subshell_id: str | None) -> None:
    """Have the browser's next messages to ``widget`` handled in subshell ``subshell_id``.

    ipykernel routes a comm's incoming messages to the subshell that last sent on it; a send
    from the pump's thread (no subshell) resets that, so the views call this after each send.
    """
    comm = getattr(widget, "comm", None)
    if subshell_id is not None and comm is not None:
        comm._reply_subshell_id = subshell_id
