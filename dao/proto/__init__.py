"""Protobuf messages of the Durham AO command protocol and log bus (package ``Dao``).

``dao_pb2`` is generated from ``dao.proto``; regenerate it from the repository root with a
throwaway environment holding ``grpcio-tools==1.63.0`` (gencode 5.26.1, which runs on any
protobuf runtime >= 5.26.1)::

    python -m grpc_tools.protoc -I dao/proto --python_out=dao/proto dao/proto/dao.proto
"""

from __future__ import annotations

from .dao_pb2 import CommandMessage, LogMessage, ReplyMessage

__all__ = ["CommandMessage", "LogMessage", "ReplyMessage"]
