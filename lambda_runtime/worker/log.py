"""The order log: the single place the commands' output and the worker's notes are written to.

The commands must not be able to change what is uploaded as their log (replace it with a file
of their own, or write a raw secret into it). So the worker keeps the log where no command can
reach it by name: an anonymous temporary file (``O_TMPFILE``: it never has a name), open only in
the worker, which is undumpable (``/proc/<worker>/fd`` is closed to other processes of its
user), and uploads it from that handle.

Every line is masked (the order's own secrets) and then has its credentials redacted
(``redact_credentials``: ``user:password@`` in URLs, token shapes such as ``ghp_...``) as it is
written, so the final log, the live log and the worker's own stream (CloudWatch, the CodeBuild
console) hold the same clean text: a reader of any copy, from any offset, finds no credential a
tool printed, whoever's it was. Masking comes first: it hides a secret whole, where a redaction
applied first could change part of a secret's printed form and leave the rest of it unmatched.

While the commands run, the same file is published as the live log (``worker.live``): a snapshot
of its first bytes, always ending at a line end. A live log is capped (``live_cap_bytes``): the
line that crosses the cap is followed by a note saying the live log stops there, written into the
log itself, so the live copy stays a prefix of the final log and a reader's offset stays valid.
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path
from typing import BinaryIO, TextIO

from lambda_runtime.mask_digests import DigestMasker
from lambda_runtime.masking import Masker, mask_cut_credential, redact_credentials
from lambda_runtime.schema.contract import LOG_TAIL_CHARS

LINE_CAP_BYTES = 64 * 1024
NOTE_PREFIX = "[iac-ci] "
MIB = 1024 * 1024


def size_text(n: int) -> str:
    """``4 MiB``, ``64 KiB``, ``300 bytes``: a size as a note says it."""
    if n >= MIB:
        return f"{n / MIB:.3g} MiB"
    return f"{n / 1024:.3g} KiB" if n >= 1024 else f"{n} bytes"


class OrderLog:
    """Every line anyone will see passes through here, so no path can skip masking.

    The masked lines go to a file (uploaded at the end, and published as the live log meanwhile),
    to the live stream (CloudWatch or the CodeBuild console) and into the tail kept for the result.
    Writes are serialized because the output reader thread and the worker's own notes interleave.

    ``path`` None (the worker): the file is anonymous. A path (tests, tools) names it; the upload
    still reads the open handle, not the path. ``live_cap_bytes``: how much of it the live log
    may show (None: there is no live log, and no cap note).
    """

    def __init__(self, path: Path | None, stream: TextIO | None, masker: Masker, *,
                 live_cap_bytes: int | None = None) -> None:
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
        self._size = 0  # bytes written so far
        self._live_cap = live_cap_bytes
        self._live_end: int | None = None  # where the live log stops, once it reached its cap

    def add_secrets(self, secrets: list[str], base: list[str], *, digests: DigestMasker | None = None) -> None:
        """Mask the order's own values, the payload's URLs and (``digests``) the run's other secrets."""
        with self._lock:
            self._masker = Masker([*base, *secrets], digests=digests)
            self._longest_form = self._masker.longest_form

    def mask(self, text: str) -> str:
        return self._masker.mask(text)

    def line(self, text: str) -> None:
        self._write(self._clean(text))

    def truncated_line(self, text: str) -> None:
        """A line cut at the cap may end inside a secret; drop enough of its end that no fragment
        of one survives (the longest printed form of any secret, escapes included), and mask a
        credential it ends inside of (``mask_cut_credential``), which no shape matches once cut."""
        cut = max(0, len(text) - self._longest_form)
        shown = mask_cut_credential(self._clean(text[:cut]))
        self._write(f"{shown} {NOTE_PREFIX}line truncated at {LINE_CAP_BYTES} bytes")

    def _clean(self, text: str) -> str:
        """What a line of output may show: the order's secrets masked, then others' credentials
        redacted (see the module docstring for why in this order)."""
        return redact_credentials(self._masker.mask(text))

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

    @property
    def size(self) -> int:
        """Bytes written so far (the live log publishes when this changed)."""
        with self._lock:
            return self._size

    def live_snapshot(self) -> tuple[bytes, bool] | None:
        """The live log now: the log's first bytes (all of it, or up to its cap note) and whether it
        reached the cap (it will not grow again). Ends at a line end: every write is a whole line,
        under the same lock. None once closed."""
        with self._lock:
            if self._closed:
                return None
            self._file.flush()
            end = self._size if self._live_end is None else self._live_end
            return os.pread(self._file.fileno(), end, 0), self._live_end is not None

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
            self._append(masked)
            if self._live_cap is not None and self._size >= self._live_cap:
                self._stop_live(f"the live log stops here, at {size_text(self._live_cap)}; "
                                "the whole log is uploaded when the order ends")

    def stop_live(self, message: str) -> None:
        """End the live log here, with a note saying so (once; later calls do nothing)."""
        with self._lock:
            if not self._closed:
                self._stop_live(message)

    def _stop_live(self, message: str) -> None:
        if self._live_end is None:
            self._append(f"{NOTE_PREFIX}{message}\n")
            self._live_end = self._size

    def _append(self, masked: str) -> None:
        """One masked line to the file, the tail and the stream; the caller holds the lock."""
        data = masked.encode("utf-8", errors="replace")
        self._file.write(data)
        self._size += len(data)
        self._tail = (self._tail + masked)[-LOG_TAIL_CHARS:]
        if self._stream is not None:
            try:
                self._stream.write(masked)
                self._stream.flush()
            except (OSError, ValueError):
                self._stream = None  # a broken console must not fail the order
