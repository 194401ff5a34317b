"""The order log: the single place the commands' output and the worker's notes are written to.

The commands must not be able to change what is uploaded as their log (replace it with a file
of their own, or write a raw secret into it). So the worker keeps the log where no command can
reach it by name: an anonymous temporary file (``O_TMPFILE``: it never has a name), open only in
the worker, which is undumpable (``/proc/<worker>/fd`` is closed to other processes of its
user), and uploads it from that handle.
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path
from typing import BinaryIO, TextIO

from lambda_runtime.mask_digests import DigestMasker
from lambda_runtime.masking import Masker
from lambda_runtime.schema.contract import LOG_TAIL_CHARS

LINE_CAP_BYTES = 64 * 1024
NOTE_PREFIX = "[iac-ci] "


class OrderLog:
    """Every line anyone will see passes through here, so no path can skip masking.

    The masked lines go to a file (uploaded at the end), to the live stream (CloudWatch or the
    CodeBuild console) and into the tail kept for the result. Writes are serialized because the
    output reader thread and the worker's own notes interleave.

    ``path`` None (the worker): the file is anonymous. A path (tests, tools) names it; the upload
    still reads the open handle, not the path.
    """

    def __init__(self, path: Path | None, stream: TextIO | None, masker: Masker) -> None:
        self.path = path
        self._file: BinaryIO = (  # closed in close()
            open(path, "w+b") if path is not None else tempfile.TemporaryFile("w+b", prefix="iac-ci-log-")  # noqa: SIM115
        )
        self._stream = stream
        self._masker = masker
        self._longest_form = 0
        self._tail = ""
        self._closed = False
        self._lock = threading.Lock()

    def add_secrets(self, secrets: list[str], base: list[str], *, digests: DigestMasker | None = None) -> None:
        """Mask the order's own values, the payload's URLs and (``digests``) the run's other secrets."""
        with self._lock:
            self._masker = Masker([*base, *secrets], digests=digests)
            self._longest_form = self._masker.longest_form

    def mask(self, text: str) -> str:
        return self._masker.mask(text)

    def line(self, text: str) -> None:
        self._write(self._masker.mask(text))

    def truncated_line(self, text: str) -> None:
        """A line cut at the cap may end inside a secret; drop enough of its end that no fragment
        of one survives (the longest printed form of any secret, escapes included)."""
        cut = max(0, len(text) - self._longest_form)
        self._write(self._masker.mask(text[:cut]) + f" {NOTE_PREFIX}line truncated at {LINE_CAP_BYTES} bytes")

    def note(self, message: str) -> None:
        self.line(NOTE_PREFIX + message)

    @property
    def tail(self) -> str:
        with self._lock:
            return self._tail

    def flush(self) -> None:
        with self._lock:
            if not self._closed:
                self._file.flush()

    def upload_body(self) -> Path | bytes:
        """What to upload: this process's own descriptor of the file (``/proc/self/fd/N``, reopened
        by each upload attempt, streamed), or the bytes where there is no /proc. Only before close."""
        with self._lock:
            if self._closed:
                raise ValueError("the order log is closed")
            self._file.flush()
            fd = self._file.fileno()
            own = Path(f"/proc/self/fd/{fd}")
            if own.exists():
                return own
            return os.pread(fd, os.fstat(fd).st_size, 0)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._file.close()

    def _write(self, masked: str) -> None:
        if not masked.endswith("\n"):
            masked += "\n"
        with self._lock:
            if self._closed:  # a reader abandoned after a stray process kept the pipe open
                return
            self._file.write(masked.encode("utf-8", errors="replace"))
            self._tail = (self._tail + masked)[-LOG_TAIL_CHARS:]
            if self._stream is not None:
                try:
                    self._stream.write(masked)
                    self._stream.flush()
                except (OSError, ValueError):
                    self._stream = None  # a broken console must not fail the order
