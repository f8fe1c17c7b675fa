"""Logging: TRACE level, the ZeroMQ log bus (handler -> forwarder -> subscriber)."""

from __future__ import annotations

import logging
import time
import uuid

import pytest

from dao.proto import LogMessage
from dao.runtime.logbus import (
    TRACE,
    LogBusHandler,
    LogForwarder,
    LogSubscriber,
    parse_level,
    to_proto_level,
    trace,
)


def test_trace_level():
    assert TRACE == 5 == LogMessage.TRACE
    assert logging.getLevelName(TRACE) == "TRACE"
    assert parse_level("trace") == 5 and parse_level("WARN") == 30 and parse_level(20) == 20
    with pytest.raises(ValueError, match="unknown log level"):
        parse_level("LOUD")


def test_trace_helper(caplog):
    logger = logging.getLogger("dao.test.trace")
    caplog.set_level(TRACE, logger="dao.test.trace")
    trace(logger, "fine %d", 42)
    assert caplog.records[-1].levelname == "TRACE"
    assert caplog.records[-1].getMessage() == "fine 42"


@pytest.mark.parametrize(
    "py,proto",
    [(0, 0), (5, 5), (10, 10), (15, 10), (20, 20), (30, 30), (40, 40), (50, 50), (60, 50)],
)
def test_to_proto_level(py, proto):
    assert to_proto_level(py) == proto


def _collect(sub, logger, text, want=1, timeout=5.0):
    """Log until the subscription has propagated (PUB/SUB slow joiner), then collect."""
    got = []
    end = time.monotonic() + timeout
    i = 0
    while time.monotonic() < end and len(got) < want:
        logger.warning("%s %d", text, i)
        i += 1
        rec = sub.recv(timeout=0.05)
        while rec is not None:
            got.append(rec)
            rec = sub.recv(timeout=0.01)
    return got


def test_handler_forwarder_subscriber():
    name = f"comp{uuid.uuid4().hex[:6]}"
    with LogForwarder("tcp://127.0.0.1:0", "tcp://127.0.0.1:0") as fwd:
        handler = LogBusHandler(fwd.frontend, component=name)
        logger = logging.getLogger(f"dao.test.{name}")
        logger.propagate = False
        logger.setLevel(logging.INFO)
        logger.addHandler(handler)
        try:
            with LogSubscriber(fwd.backend) as sub:
                got = _collect(sub, logger, "ao loop closed")
        finally:
            logger.removeHandler(handler)
            handler.close()
    assert got, "no record came through the forwarder"
    rec = got[0]
    assert rec.component == name and rec.level == 30 and rec.level_name == "WARNING"
    assert rec.message.startswith("ao loop closed")
    assert rec.machine and "T" in rec.time_stamp
    assert name in str(rec)
    assert fwd.forwarded >= 1


def test_two_publishers_one_subscriber():
    with LogForwarder("tcp://127.0.0.1:0", "tcp://127.0.0.1:0") as fwd:
        loggers, handlers = [], []
        for n in ("cam", "dm"):
            h = LogBusHandler(fwd.frontend, component=n)
            lg = logging.getLogger(f"dao.test.two.{n}.{uuid.uuid4().hex[:4]}")
            lg.propagate = False
            lg.addHandler(h)
            loggers.append(lg)
            handlers.append(h)
        with LogSubscriber(fwd.backend) as sub:
            got = []
            end = time.monotonic() + 5
            while time.monotonic() < end and {r.component for r in got} != {"cam", "dm"}:
                for lg in loggers:
                    lg.error("x")
                rec = sub.recv(0.05)
                while rec is not None:
                    got.append(rec)
                    rec = sub.recv(0.01)
        for lg, h in zip(loggers, handlers, strict=True):
            lg.removeHandler(h)
            h.close()
    assert {r.component for r in got} == {"cam", "dm"}


def test_subscriber_skips_foreign_frames_and_relogs(caplog):
    import zmq

    ctx = zmq.Context.instance()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    try:
        with LogSubscriber(f"tcp://127.0.0.1:{port}") as sub:
            good = LogMessage(
                component_name="wfs", log_message="hi", level=LogMessage.INFO
            ).SerializeToString()
            rec = None
            end = time.monotonic() + 5
            while rec is None and time.monotonic() < end:
                pub.send(b"\xff\xff\xff")  # not a LogMessage
                pub.send(good)
                rec = sub.recv(0.05)
            assert rec is not None and rec.component == "wfs"
            assert sub.malformed >= 1
            caplog.set_level(logging.INFO, logger="dao.bus")
            sub.to_logging(rec)
            assert caplog.records[-1].name == "dao.bus.wfs"
    finally:
        pub.close()


def test_handler_bind_mode_without_forwarder():
    h = LogBusHandler("tcp://127.0.0.1:0", component="solo", bind=True)
    lg = logging.getLogger(f"dao.test.solo.{uuid.uuid4().hex[:4]}")
    lg.propagate = False
    lg.addHandler(h)
    try:
        with LogSubscriber(h.address) as sub:
            got = _collect(sub, lg, "direct")
    finally:
        lg.removeHandler(h)
        h.close()
    assert got and got[0].component == "solo"
