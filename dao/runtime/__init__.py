"""Runtime: the DAO state machine, components driven over ZeroMQ, threads, supervisor, logs.

- :mod:`~dao.runtime.state`: states, events, transitions and the paths between states
  (:func:`path`);
- :mod:`~dao.runtime.parameters`: published, validated component parameters;
- :mod:`~dao.runtime.threads`: real-time threads, thread and signal tables;
- :mod:`~dao.runtime.component`: the component base class and its stream declarations;
- :mod:`~dao.runtime.command`: the command protocol (REQ/REP + protobuf), server and client;
- :mod:`~dao.runtime.events`: what components and supervisors publish about themselves
  (state, parameters, errors, heartbeats, health; PUB/SUB + JSON), :func:`subscribe`;
- :mod:`~dao.runtime.status`: :class:`Status`, the handle of a long operation run with
  ``wait=False``;
- :mod:`~dao.runtime.logbus`: the log bus (PUB/SUB + protobuf);
- :mod:`~dao.runtime.supervisor`: starting, watching and restarting component processes;
- :mod:`~dao.runtime.cli`: ``dao run``, ``dao ctl``, ``dao events``, ``dao supervise``,
  ``dao logs``.
"""

from dao.runtime.command import CommandFailed, CommandServer, CommandTimeout, ComponentClient
from dao.runtime.component import TIMING_FIELDS, Component, ComponentError, Input, Output
from dao.runtime.events import (
    EVENT_KINDS,
    EventError,
    EventPublisher,
    EventSubscriber,
    EventTimeout,
    subscribe,
)
from dao.runtime.logbus import TRACE, LogBusHandler, LogForwarder, LogSubscriber
from dao.runtime.parameters import Parameter, ParameterError
from dao.runtime.state import (
    Event,
    HookError,
    IllegalTransition,
    State,
    StateMachine,
    parse_state,
    path,
)
from dao.runtime.status import Status, StatusTimeout
from dao.runtime.supervisor import Supervisor, SupervisorError
from dao.runtime.threads import RTThread, SignalTable, ThreadTable

__all__ = [
    "EVENT_KINDS",
    "TIMING_FIELDS",
    "TRACE",
    "CommandFailed",
    "CommandServer",
    "CommandTimeout",
    "Component",
    "ComponentClient",
    "ComponentError",
    "Event",
    "EventError",
    "EventPublisher",
    "EventSubscriber",
    "EventTimeout",
    "HookError",
    "IllegalTransition",
    "Input",
    "LogBusHandler",
    "LogForwarder",
    "LogSubscriber",
    "Output",
    "Parameter",
    "ParameterError",
    "RTThread",
    "SignalTable",
    "State",
    "StateMachine",
    "Status",
    "StatusTimeout",
    "Supervisor",
    "SupervisorError",
    "ThreadTable",
    "parse_state",
    "path",
    "subscribe",
]
