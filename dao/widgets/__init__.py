"""Notebook widgets: live views of streams, FIFO histories, component and loop panels.

Everything shown live is fed by one background thread per kernel, the :class:`Pump`, which
keeps all widgets together at or under 300 messages per second (JupyterLab drops messages
above 1000 per second) and stops when the last view is closed; cells run meanwhile.

- :class:`StreamView`: a live view of any stream (image, map on a grid, curves), frames sent
  as binary buffers with acknowledged delivery (anywidget);
- :class:`HistoryView`: a FIFO history or a recording as xarray: frames, time series and
  temporal power spectrum of an element, streams aligned by frame counter;
- :class:`ComponentPanel`: a component's state, legal events, parameters, errors, log and rate;
- :class:`ThreadPanel`: real-time threads and thread tables;
- :class:`LoopDashboard`: an :class:`dao.loop.AOLoop` at a glance.

ipywidgets, anywidget and bokeh are imported when a widget is first used.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["Pump", "get_pump", "StreamView", "HistoryView", "ComponentPanel", "ThreadPanel",
           "LoopDashboard", "frame_layout"]

_WHERE = {
    "Pump": "dao.widgets.pump", "get_pump": "dao.widgets.pump",
    "StreamView": "dao.widgets.stream_view", "frame_layout": "dao.widgets.layout",
    "HistoryView": "dao.widgets.history", "ComponentPanel": "dao.widgets.component_panel",
    "ThreadPanel": "dao.widgets.thread_panel", "LoopDashboard": "dao.widgets.dashboard",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dao.widgets' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
