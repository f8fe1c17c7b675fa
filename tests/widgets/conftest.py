"""Fixtures of the widget tests: a stand-in for the browser's side of a StreamView."""

from __future__ import annotations

import threading
import time

import pytest


class Frontend:
    """Receives what a view sends (as the browser would) and acknowledges each frame after
    ``draw_s`` seconds, from a thread of its own, like the page's ``model.send``."""

    def __init__(self, view, draw_s: float = 0.002, ack: bool = True) -> None:
        self.view = view
        self.draw_s = draw_s
        self.ack = ack
        self.frames: list[tuple[dict, list]] = []
        self.notes: list[str] = []
        self._lock = threading.Lock()
        view.send = self._receive  # the widget's comm is not connected in a test

    def _receive(self, content, buffers=None):
        with self._lock:
            if content.get("type") == "note":
                self.notes.append(content["text"])
                return
            self.frames.append((content, list(buffers or [])))
        if self.ack:
            threading.Timer(self.draw_s, self._ack, (content,)).start()

    def _ack(self, content):
        age = time.time() * 1e3 - content["time_ms"]
        self.view._on_msg(self.view, {"type": "ack", "seq": content["seq"], "age_ms": age}, [])

    @property
    def last(self) -> dict:
        with self._lock:
            return self.frames[-1][0]


@pytest.fixture
def frontend():
    made = []

    def make(view, **kw):
        f = Frontend(view, **kw)
        made.append(f)
        return f

    yield make
    for f in made:
        f.view.close()
