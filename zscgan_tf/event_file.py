"""TensorBoard's events file of one training, checked to hold every record it was given.

TensorFlow's events writer ignores a write that fails (`EventsWriter::WriteSerializedEvent`
drops the status of `WriteRecord`), and the C library drops what it had buffered: a disk full
for a moment cuts records out of the file, or leaves part of one, and the writer's flush, which
is the only write it reports, succeeds once space is back. A full-disk audit lost 1 of 374
records, or left a file that reads to its 67th, and the run ended with status 0.
"""

import glob
import os
import struct
from typing import Optional, Tuple

import tensorflow as tf

from zscgan_tf.errors import LostWritesError
from zscgan_tf.progress import say

EVENTS_FILE_PATTERN = "events.out.tfevents.*"
# A TFRecord: the data's length (8 bytes, little-endian) and its checksum (4), the data, its checksum (4).
_LENGTH_BYTES, _CHECKSUM_BYTES = 8, 4


class EventFile:
    """A `tf.summary` file writer in a directory of its own, and the file it writes.

    Attributes:
      writer: the `tf.summary` writer.
      path: its events file, None where it cannot be told (another file appeared beside it).
      records: how many records it was given: the file's version as it was created, then each
        summary the writer recorded (`add`).
    """

    def __init__(self, log_dir: str):
        earlier = set(glob.glob(os.path.join(glob.escape(log_dir), EVENTS_FILE_PATTERN)))
        self.writer = tf.summary.create_file_writer(log_dir)  # Creates the file and writes its version.
        created = set(glob.glob(os.path.join(glob.escape(log_dir), EVENTS_FILE_PATTERN))) - earlier
        self.path = created.pop() if len(created) == 1 else None
        self.records = 1
        # The records a check found whole, and the offset they end at: the next check reads on from
        # there (read from the start each time, a long run's file was read once per checkpoint).
        self._checked_records, self._checked_bytes = 0, 0

    def add(self, recorded: bool) -> None:
        """Counts a summary op's result: True when it recorded one."""
        self.records += int(bool(recorded))

    def check(self) -> None:
        """Flushes the writer and checks that the file holds every record it was given.

        Raises:
          LostWritesError: naming the file, if it holds fewer, or ends inside a record.
          tf.errors.OpError: if the flush fails (a disk still full).
        """
        self.writer.flush()
        if self.path is None:
            return
        if not os.path.lexists(self.path):
            # Removed (logs/ cleared to free space, a log cleaner): nothing a checkpoint needs was lost, and
            # TensorFlow writes on into the removed file, so later records cannot be checked either.
            say(f"note: TensorBoard's events file {self.path} was removed during the training; its scalars and "
                "images from here on are not kept; the training goes on")
            self.path = None
            return
        found = _records_from(self.path, self._checked_bytes)
        held = None if found is None else self._checked_records + found[0]
        if found is not None:
            self._checked_records, self._checked_bytes = held, found[1]
        if held is None or held < self.records:  # More is no loss: a record TensorFlow wrote of its own.
            lost = (f"holds {held} of the {self.records} records written to it" if held is not None
                    else f"lost part of the {self.records} records written to it")
            raise LostWritesError(f"TensorBoard's events file {self.path} {lost}, though TensorFlow's writer raised "
                                  "no error (it ignores a write that fails: a full disk, most often)")


def records_in(path: str) -> Optional[int]:
    """How many records the TFRecord file at `path` holds, by their lengths alone (checksums
    unread); None where it is missing or does not end where a record does (bytes lost or cut short)."""
    found = _records_from(path, 0)
    return None if found is None else found[0]


def _records_from(path: str, start: int) -> Optional[Tuple[int, int]]:
    """How many records the TFRecord file at `path` holds from byte `start`, where one begins, and
    the file's size; None where it is missing or does not end where a record does."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as file:
            count, offset = 0, start
            while offset + _LENGTH_BYTES <= size:
                file.seek(offset)
                (length,) = struct.unpack("<Q", file.read(_LENGTH_BYTES))
                offset += _LENGTH_BYTES + _CHECKSUM_BYTES + length + _CHECKSUM_BYTES
                count += 1
    except FileNotFoundError:
        return None
    return (count, offset) if offset == size else None
