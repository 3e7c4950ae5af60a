"""TensorBoard event files of a run's curves, written without TensorBoard installed.

An event file is a sequence of TFRecords (length, masked CRC-32C of the length, payload, masked CRC-32C of the
payload), each payload an ``Event`` protocol buffer; a scalar is an Event carrying a ``Summary`` with one
``Value`` (tag, simple_value). The few fields used are encoded here by hand, so that every run writes its
curves while it trains and ``tensorboard --logdir results/runs`` (the optional extra ``bench[tensorboard]``)
shows them live. A resumed run opens a new file that starts with a session-start event at the step it
resumed from: TensorBoard then hides the points the interrupted segment wrote after its last checkpoint,
which the resumed segment writes again.
"""

from __future__ import annotations

import itertools
import os
import socket
import struct
import time
from pathlib import Path

FOLDER = "tensorboard"
"""The event files' folder inside a run folder."""
SERIAL = itertools.count()
"""Tells apart the files one process opens within a second."""


def crc32c_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


CRC32C = crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = CRC32C[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def varint(n: int) -> bytes:
    out = bytearray()
    n &= (1 << 64) - 1  # negative int64 values as two's complement
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number: int, wire: int) -> bytes:
    return varint(number << 3 | wire)


def length_delimited(number: int, payload: bytes) -> bytes:
    return field(number, 2) + varint(len(payload)) + payload


def event(step: int, wall_time: float, body: bytes) -> bytes:
    """Event{wall_time = 1 (double), step = 2 (int64), ...body}."""
    return field(1, 1) + struct.pack("<d", wall_time) + field(2, 0) + varint(step) + body


def scalar_body(tag: str, value: float) -> bytes:
    """Event.summary = 5 -> Summary.value = 1 -> Value{tag = 1, simple_value = 2 (float)}."""
    value_msg = length_delimited(1, tag.encode()) + field(2, 5) + struct.pack("<f", value)
    return length_delimited(5, length_delimited(1, value_msg))


def record(payload: bytes) -> bytes:
    header = struct.pack("<Q", len(payload))
    return header + struct.pack("<I", masked_crc(header)) + payload + struct.pack("<I", masked_crc(payload))


class EventWriter:
    """Appends scalars to one new event file under ``folder``; each write is flushed (live curves)."""

    def __init__(self, folder: Path, resumed_at: int | None = None) -> None:
        """``resumed_at``: the first step this segment of a resumed run records (TensorBoard hides the earlier
        segments' points from there on)."""
        folder.mkdir(parents=True, exist_ok=True)
        stamp = time.time()
        self.path = folder / f"events.out.tfevents.{int(stamp)}.{socket.gethostname()}.{os.getpid()}.{next(SERIAL)}"
        self.fh = self.path.open("ab")
        self.write(record(event(0, stamp, length_delimited(3, b"brain.Event:2"))))  # file_version = 3
        if resumed_at is not None:  # session_log = 7 -> SessionLog{status = 1: START}
            self.write(record(event(resumed_at, stamp, length_delimited(7, field(1, 0) + varint(1)))))

    def write(self, data: bytes) -> None:
        self.fh.write(data)
        self.fh.flush()

    def scalars(self, step: int, values: dict[str, float]) -> None:
        now = time.time()
        self.write(b"".join(record(event(step, now, scalar_body(tag, float(v)))) for tag, v in values.items()))

    def close(self) -> None:
        self.fh.close()


class NoEvents:
    """Stands in for EventWriter when ``train.tensorboard`` is off."""

    def scalars(self, step: int, values: dict[str, float]) -> None:
        pass

    def close(self) -> None:
        pass
