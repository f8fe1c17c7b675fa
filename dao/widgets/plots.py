"""Bokeh plots inside ipywidgets layouts, with BokehJS loaded offline from the installed package.

A bokeh figure (or layout) becomes an ipywidgets widget with :func:`bokeh_widget` (a
``jupyter_bokeh.BokehModel``): it goes in a ``VBox``/``HBox`` beside sliders and buttons, and
every later change of its models (a ``ColumnDataSource.data`` update, a title) travels to the
browser, from the kernel's thread or from any other.

The browser side of such a widget needs BokehJS in the page before its view is created.
:func:`load_bokeh` displays the BokehJS loader of the installed bokeh package, inline
(``bokeh.io.output_notebook(bokeh.resources.INLINE, hide_banner=True)``: about 4 MB of
JavaScript that the notebook's output keeps; never the CDN, the machines at the telescope have
no internet), once per kernel. It is called for you: widgets that hold bokeh plots (the
:class:`BokehWidget` of :func:`bokeh_widget`, and any widget with the :class:`LoadsBokeh`
mixin, such as :class:`dao.widgets.HistoryView`) display the loader in the cell's output area
just before themselves, the first time one of them is made or displayed in the kernel. The loader is
a display output of its own placed before the widget's, so JupyterLab runs it (through the
``application/vnd.bokehjs_load.v0+json`` renderer of jupyter_bokeh) before the widget's view
asks for BokehJS.

After a reload of the browser page the notebook's saved output loads BokehJS again (in a
trusted notebook, i.e. one whose outputs were made and saved by you). Where they were cleared,
call ``load_bokeh(force=True)`` in a cell before showing plots again.

Examples
--------
>>> from bokeh.plotting import figure                      # doctest: +SKIP
>>> import ipywidgets
>>> fig = figure(width=400, height=250)
>>> fig.line([0, 1, 2], [0, 1, 4])
>>> ipywidgets.VBox([ipywidgets.IntSlider(), bokeh_widget(fig)])
"""

from __future__ import annotations

import threading
from typing import Any

from jupyter_bokeh import BokehModel

__all__ = ["bokeh_widget", "load_bokeh", "bokeh_loaded", "BokehWidget", "LoadsBokeh"]

_LOCK = threading.Lock()
_LOADED = False


def _in_kernel() -> bool:
    """True in a Jupyter kernel (an IPython shell with a kernel: there is a page to load into)."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with ipywidgets
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _loaded_inline_by_user() -> bool:
    """True when this kernel already ran ``output_notebook(INLINE)`` (bokeh's own record)."""
    from bokeh.io import notebook

    res = getattr(notebook, "_NOTEBOOK_LOADED", None)
    return res is not None and getattr(res, "mode", None) == "inline"


def bokeh_loaded() -> bool:
    """Whether BokehJS was loaded into the notebook from this kernel (by :func:`load_bokeh`,
    or by ``output_notebook(bokeh.resources.INLINE)``)."""
    return _LOADED or _loaded_inline_by_user()


def load_bokeh(force: bool = False) -> bool:
    """Load BokehJS, inline from the installed bokeh package, into the notebook page.

    Displays the loader (``bokeh.io.output_notebook(bokeh.resources.INLINE,
    hide_banner=True)``) in the current cell's output area, once per kernel: later calls do
    nothing, unless ``force``. Outside a Jupyter kernel (a script, the tests) there is no page
    and nothing is displayed. Widgets with bokeh plots call it when they are displayed; call it
    yourself only to load BokehJS again (``force=True``), e.g. after the notebook's outputs
    were cleared and the page reloaded.

    Parameters
    ----------
    force : bool
        Display the loader even if it was displayed before from this kernel.

    Returns
    -------
    bool
        True if the loader was displayed now.
    """
    global _LOADED
    with _LOCK:
        if not force and (_LOADED or _loaded_inline_by_user()):
            _LOADED = True
            return False
        if not _in_kernel():
            return False
        from bokeh.io import output_notebook
        from bokeh.resources import INLINE

        output_notebook(INLINE, hide_banner=True)
        _LOADED = True
        return True


def _display_bundle(widget: Any, **kwargs: Any) -> None:
    """Display a widget's own mime bundle (its view; text once it is closed)."""
    from IPython.display import display

    repr_bundle = getattr(widget, "_repr_mimebundle_", None)
    bundle = repr_bundle(**kwargs) if callable(repr_bundle) else None
    display(bundle or {"text/plain": repr(widget)}, raw=True)


class LoadsBokeh:
    """Mixin for an ipywidgets widget that holds bokeh plots (:class:`BokehWidget`).

    Displaying it (as a cell's value or with ``display``) first calls :func:`load_bokeh`, so
    that the BokehJS loader lands in the output area before the widget's view. Put it first
    among the bases: ``class MyPanel(LoadsBokeh, ipywidgets.VBox)``.
    """

    def _ipython_display_(self, **kwargs: Any) -> None:
        load_bokeh()
        _display_bundle(self, **kwargs)


class BokehWidget(LoadsBokeh, BokehModel):
    """A ``jupyter_bokeh.BokehModel`` that loads BokehJS when first displayed and counts the
    messages it sends (each change of a bokeh model is 3 messages, plus 2 per binary array).

    Made by :func:`bokeh_widget`.
    """

    messages: int = 0
    """Custom messages sent to the browser so far (document patches)."""

    def send(self, content: dict, buffers: list | None = None) -> None:
        """Send a custom message to the browser (counted in :attr:`messages`)."""
        self.messages += 1
        super().send(content, buffers)

    def close(self) -> None:
        """Close the widget (again: nothing; ``BokehModel.close`` fails the second time)."""
        if getattr(self, "_closed_once", False):
            return
        self._closed_once = True
        super().close()


def bokeh_widget(obj: Any) -> BokehWidget:
    """A bokeh figure or layout as an ipywidgets widget, for ``VBox``/``HBox`` layouts.

    Parameters
    ----------
    obj : bokeh.models.LayoutDOM
        A figure, or a layout of them (``bokeh.layouts.column``, ``row``, ``gridplot``). Later
        changes of its models are sent to the browser as document patches.

    Returns
    -------
    BokehWidget
        A ``jupyter_bokeh.BokehModel``. Making it in a kernel loads BokehJS into the page
        (:func:`load_bokeh`, once per kernel), so it also works inside a plain ``VBox``;
        displaying it, or a box with the :class:`LoadsBokeh` mixin, checks again.

    Raises
    ------
    TypeError
        If ``obj`` is not a bokeh layout or figure.
    """
    from bokeh.models import LayoutDOM

    if not isinstance(obj, LayoutDOM):
        raise TypeError(f"bokeh_widget takes a bokeh figure or layout, not "
                        f"{type(obj).__name__}: make one with bokeh.plotting.figure() or "
                        "bokeh.layouts.column()")
    load_bokeh()  # in a kernel: the loader precedes the widget even inside a plain VBox
    return BokehWidget(obj)
