"""TFRecord framing, written and read without TensorFlow (Beam workers never import it)."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import BinaryIO

import google_crc32c


def _masked_crc(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord_frame(record: bytes) -> bytes:
    """TFRecord framing: length, masked CRC32C of the length, data, masked CRC32C of the data."""
    length = struct.pack("<Q", len(record))
    return length + struct.pack("<I", _masked_crc(length)) + record + struct.pack("<I", _masked_crc(record))


class CorruptRecordError(ValueError):
    """A TFRecord file whose framing or checksums do not hold; the message names the file and the offset."""


def read_records(stream: BinaryIO, name: str) -> Iterator[bytes]:
    """The records of a TFRecord stream, checksums verified (a truncated or damaged shard is an error, not an end)."""
    offset = 0
    while header := stream.read(12):
        if len(header) < 12 or struct.unpack("<I", header[8:])[0] != _masked_crc(header[:8]):
            raise CorruptRecordError(f"{name}: corrupt record length at byte {offset}")
        (length,) = struct.unpack("<Q", header[:8])
        record, footer = stream.read(length), stream.read(4)
        if len(record) < length or len(footer) < 4 or struct.unpack("<I", footer)[0] != _masked_crc(record):
            raise CorruptRecordError(f"{name}: truncated or corrupt record at byte {offset}")
        offset += 12 + length + 4
        yield record
