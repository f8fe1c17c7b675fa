"""Runtime: the DAO state machine, components driven over ZeroMQ, threads, supervisor, logs.

- :mod:`~dao.runtime.state`: states, events, transitions and the paths between states;
- :mod:`~dao.runtime.parameters`: published, validated component parameters;
- :mod:`~dao.runtime.threads`: real-time threads, thread and signal tables;
- :mod:`~dao.runtime.component`: the component base class and its stream declarations;
- :mod:`~dao.runtime.command`: the command protocol (REQ/REP + protobuf), server and client;
- :mod:`~dao.runtime.logbus`: the log bus (PUB/SUB + protobuf);
- :mod:`~dao.runtime.supervisor`: starting, watching and restarting component processes;
- :mod:`~dao.runtime.cli`: ``dao run``, ``dao ctl``, ``dao supervise``, ``dao logs``.
"""

from dao.runtime.command import CommandFailed, CommandServer, CommandTimeout, ComponentClient
from dao.runtime.component import Component, ComponentError, Input, Output
from dao.runtime.logbus import TRACE, LogBusHandler, LogForwarder, LogSubscriber
from dao.runtime.parameters import Parameter, ParameterError
from dao.runtime.state import Event, HookError, IllegalTransition, State, StateMachine
from dao.runtime.supervisor import Supervisor, SupervisorError
from dao.runtime.threads import RTThread, SignalTable, ThreadTable

__all__ = [
    "TRACE",
    "CommandFailed",
    "CommandServer",
    "CommandTimeout",
    "Component",
    "ComponentClient",
    "ComponentError",
    "Event",
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
    "Supervisor",
    "SupervisorError",
    "ThreadTable",
]
