"""Bokeh plots as ipywidgets (jupyter_bokeh) and BokehJS loaded inline, once per kernel.

What the browser makes of it (the loader runs before the widget's view, the plot draws with
no network) is checked in a real JupyterLab by the browser tests; here: what the kernel
displays, in which order, and that nothing points at a CDN.
"""

from __future__ import annotations

import ipywidgets
import pytest
from bokeh.models import ColumnDataSource
from bokeh.plotting import figure
from jupyter_bokeh import BokehModel

from dao.widgets import plots

LOAD_MIME = "application/vnd.bokehjs_load.v0+json"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


@pytest.fixture
def kernel(monkeypatch):
    """A pretend kernel: what would be displayed in the cell's output area, in order."""
    import bokeh.io.notebook
    import IPython.display

    shown: list[dict] = []
    monkeypatch.setattr(plots, "_LOADED", False)
    monkeypatch.setattr(plots, "_in_kernel", lambda: True)
    monkeypatch.setattr(bokeh.io.notebook, "_NOTEBOOK_LOADED", None)
    monkeypatch.setattr(bokeh.io.notebook, "publish_display_data",
                        lambda data, metadata=None, **kw: shown.append(data))
    monkeypatch.setattr(IPython.display, "display",
                        lambda obj, raw=False, **kw: shown.append(obj))
    yield shown
    from bokeh.io import reset_output

    reset_output()


def fig_with_source():
    source = ColumnDataSource({"x": [0, 1, 2], "y": [0, 1, 4]})
    fig = figure(width=300, height=200)
    fig.line("x", "y", source=source)
    return fig, source


def test_bokeh_widget_is_a_bokeh_model_for_ipywidgets_layouts():
    fig, source = fig_with_source()
    widget = plots.bokeh_widget(fig)
    assert isinstance(widget, BokehModel) and isinstance(widget, ipywidgets.DOMWidget)
    box = ipywidgets.VBox([ipywidgets.IntSlider(), widget])
    assert box.children[1] is widget
    # a change of the figure's data is a document patch sent to the browser, counted
    before = widget.messages
    source.data = {"x": [0, 1], "y": [1, 1]}
    assert widget.messages > before
    widget.close()
    widget.close()  # twice: nothing (jupyter_bokeh's own close fails the second time)
    with pytest.raises(TypeError, match="bokeh figure or layout"):
        plots.bokeh_widget("not a figure")


def test_bokehjs_is_loaded_inline_once_per_kernel(kernel):
    assert not plots.bokeh_loaded()
    assert plots.load_bokeh() is True
    assert plots.load_bokeh() is False  # once per kernel
    assert plots.bokeh_loaded()
    assert len(kernel) == 1 and LOAD_MIME in kernel[0]
    js = kernel[0][LOAD_MIME]
    assert "const js_urls = [];" in js and "const css_urls = [];" in js  # nothing fetched
    assert "cdn.bokeh.org" not in js and "BEGIN bokeh.min.js" in js  # the package's own
    assert plots.load_bokeh(force=True) is True  # e.g. after outputs were cleared
    assert len(kernel) == 2


def test_the_loader_is_displayed_before_the_first_widget(kernel):
    fig, _ = fig_with_source()
    widget = plots.bokeh_widget(fig)  # made in a cell: the loader goes to that cell
    assert [LOAD_MIME in d for d in kernel] == [True]
    widget._ipython_display_()  # displayed (the cell's value, or display(widget))
    assert LOAD_MIME not in kernel[-1] and WIDGET_MIME in kernel[-1]
    assert kernel[-1][WIDGET_MIME]["model_id"] == widget.model_id
    fig2, _ = fig_with_source()
    plots.bokeh_widget(fig2)._ipython_display_()  # the next ones: no loader again
    assert sum(LOAD_MIME in d for d in kernel) == 1
    widget.close()


def test_a_box_with_the_mixin_loads_before_itself(kernel):
    class Panel(plots.LoadsBokeh, ipywidgets.VBox):
        pass

    panel = Panel([ipywidgets.Label("plots")])
    panel._ipython_display_()
    assert LOAD_MIME in kernel[0] and WIDGET_MIME in kernel[1]
    panel.close()
    panel._ipython_display_()  # closed: its text, no view
    assert kernel[-1] == {"text/plain": repr(panel)}


def test_no_loader_outside_a_kernel(monkeypatch):
    import bokeh.io.notebook

    monkeypatch.setattr(plots, "_LOADED", False)
    monkeypatch.setattr(bokeh.io.notebook, "_NOTEBOOK_LOADED", None)
    assert plots.load_bokeh() is False and not plots.bokeh_loaded()
