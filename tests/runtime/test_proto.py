"""Protobuf wire compatibility: bytes checked against encodings made by hand from the schema.

Wire format reminder: a field key is ``(field_number << 3) | wire_type`` as a varint; wire type 0
is a varint (enums), 2 is length-delimited (strings). proto3 does not send default values.
"""

from __future__ import annotations

import pytest

from dao.proto import CommandMessage, LogMessage, ReplyMessage, dao_pb2


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def key(field: int, wire: int) -> bytes:
    return varint((field << 3) | wire)


def string(field: int, text: str) -> bytes:
    raw = text.encode()
    return key(field, 2) + varint(len(raw)) + raw


def enum(field: int, value: int) -> bytes:
    return key(field, 0) + varint(value)


def test_schema_names_and_numbers():
    assert dao_pb2.DESCRIPTOR.package == "Dao"
    assert CommandMessage.DESCRIPTOR.full_name == "Dao.CommandMessage"
    fields = {f.name: f.number for f in CommandMessage.DESCRIPTOR.fields}
    assert fields == {"component": 1, "function": 2, "payload": 3}
    assert dict(CommandMessage.COMMAND.items()) == {
        "EXEC": 0,
        "SETUP": 1,
        "UPDATE": 2,
        "PING": 3,
        "STATE": 4,
        "SET_LOG_LEVEL": 5,
        "DUMP": 6,
        "QUERY": 7,
        "OTHER": 8,
    }
    assert {f.name: f.number for f in ReplyMessage.DESCRIPTOR.fields} == {"status": 1, "payload": 2}
    assert dict(ReplyMessage.RETURN.items()) == {"SUCCESS": 0, "FAILURE": 1}
    assert {f.name: f.number for f in LogMessage.DESCRIPTOR.fields} == {
        "component_name": 1,
        "time_stamp": 2,
        "machine": 3,
        "log_message": 4,
        "level": 5,
    }
    assert dict(LogMessage.LEVEL.items()) == {
        "NOSET": 0,
        "TRACE": 5,
        "DEBUG": 10,
        "INFO": 20,
        "WARNING": 30,
        "ERROR": 40,
        "CRITICAL": 50,
    }


def test_command_setup_bytes():
    msg = CommandMessage(component="cam", function=CommandMessage.SETUP, payload="gain=0.3")
    expected = b"\x0a\x03cam" + b"\x10\x01" + b"\x1a\x08gain=0.3"
    assert expected == string(1, "cam") + enum(2, 1) + string(3, "gain=0.3")
    assert msg.SerializeToString() == expected
    back = CommandMessage()
    back.ParseFromString(expected)
    assert back == msg


def test_command_exec_default_enum_not_sent():
    # EXEC is 0, proto3's default: only the payload goes on the wire
    msg = CommandMessage(function=CommandMessage.EXEC, payload="Init")
    assert msg.SerializeToString() == b"\x1a\x04Init"


@pytest.mark.parametrize(
    "name,value",
    [("PING", 3), ("STATE", 4), ("SET_LOG_LEVEL", 5), ("DUMP", 6), ("QUERY", 7), ("OTHER", 8)],
)
def test_command_function_values(name, value):
    msg = CommandMessage(function=CommandMessage.COMMAND.Value(name))
    assert msg.SerializeToString() == bytes([0x10, value])


def test_long_payload_length_is_a_varint():
    text = "x" * 300
    msg = CommandMessage(function=CommandMessage.OTHER, payload=text)
    assert msg.SerializeToString() == b"\x10\x08" + b"\x1a\xac\x02" + text.encode()


def test_reply_bytes():
    assert ReplyMessage(status=ReplyMessage.FAILURE, payload="no").SerializeToString() == (
        b"\x08\x01\x12\x02no"
    )
    assert ReplyMessage(status=ReplyMessage.SUCCESS, payload="4242").SerializeToString() == (
        b"\x12\x044242"
    )
    rep = ReplyMessage()
    rep.ParseFromString(b"\x08\x01\x12\x05error")
    assert rep.status == ReplyMessage.FAILURE and rep.payload == "error"


def test_log_message_bytes():
    msg = LogMessage(
        component_name="slopes",
        time_stamp="2024-01-01T00:00:00",
        machine="rtc",
        log_message="hello",
        level=LogMessage.CRITICAL,
    )
    expected = (
        string(1, "slopes")
        + string(2, "2024-01-01T00:00:00")
        + string(3, "rtc")
        + string(4, "hello")
        + b"\x28\x32"
    )
    assert msg.SerializeToString() == expected
    trace = LogMessage(level=LogMessage.TRACE)
    assert trace.SerializeToString() == b"\x28\x05"


def test_unicode_payload_is_utf8():
    msg = CommandMessage(payload="µm")
    assert msg.SerializeToString() == b"\x1a\x03" + "µm".encode()


def test_unknown_fields_are_tolerated():
    # a newer peer adding field 9 must not break us
    data = b"\x1a\x04Init" + key(9, 0) + varint(7)
    msg = CommandMessage()
    msg.ParseFromString(data)
    assert msg.payload == "Init"
