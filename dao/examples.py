"""Tiny example components: run them with ``dao run dao.examples:Counter --port 5555``.

- :class:`Counter` writes an incrementing counter to the stream ``<name>_counter`` while
  Running, adding the published parameter ``step`` (default 1) every ``period`` seconds.
- :class:`Relay` copies each new frame of its input stream to its output stream (the
  smallest stream-driven component; used to measure wake-to-output latency).
- :class:`Faulty` is a Counter whose ``process`` raises when the count reaches ``fail_at``,
  to try Error and Recover.

Watch one from another shell: ``dao events 5555`` prints its state changes, parameter changes,
errors and a heartbeat a second (iteration rate, p50/p99 processing time) as JSON lines; and
``dao ctl 5555 EXEC Init`` drives it.
"""

from __future__ import annotations

import numpy as np

from dao.runtime.component import Component, Input, Output
from dao.runtime.parameters import Parameter

__all__ = ["Counter", "Relay", "Faulty"]


class Counter(Component):
    """Writes ``count += step`` to the stream ``<name>_counter`` every ``period`` s while
    Running.

    Examples
    --------
    >>> from dao.examples import Counter
    >>> c = Counter("demo_counter", period=1e-3)   # doctest: +SKIP
    >>> c.goto("Running")                          # doctest: +SKIP
    <State.RUNNING: 'Running'>
    >>> c.counter.get_data()                       # doctest: +SKIP
    array([[42]])
    >>> st = c.goto("Off", wait=False)             # doctest: +SKIP
    >>> st.wait(5)                                 # doctest: +SKIP
    <State.OFF: 'Off'>
    """

    counter = Output((1, 1), np.int64, doc="the count (a (1, 1) array: C readers refuse 1-D)")
    step = Parameter(1, int, doc="added to the count at each iteration")
    period = Parameter(0.01, float, unit="s", bounds=(1e-5, 60.0), doc="loop period")

    def allocate(self) -> None:
        self.count = np.zeros((1, 1), np.int64)

    def process(self, data: None) -> None:
        self.count += self.step
        self.counter.set_data(self.count)


class Faulty(Counter):
    """A :class:`Counter` whose ``process`` raises ``RuntimeError`` when the count reaches
    ``fail_at`` (0: never)."""

    fail_at = Parameter(0, int, bounds=(0, None), doc="count at which process() raises")

    def process(self, data: None) -> None:
        super().process(data)
        if self.fail_at and int(self.count[0, 0]) >= self.fail_at:
            self.fail_at = 0  # fail once; Recover then goes on counting
            raise RuntimeError(f"deliberate failure at count {int(self.count[0, 0])}")


class Relay(Component):
    """Copies each new frame of ``source`` to ``sink`` (same shape and dtype)."""

    source = Input(doc="input stream (set streams.source in the config)")
    sink = Output(like="source", doc="copy of the input")

    def process(self, data: np.ndarray) -> None:
        self.sink.set_data(data)
