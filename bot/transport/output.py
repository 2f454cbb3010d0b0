"""What both transports keep of a command's output: the tail, read as it arrives.

A build or a `tar -v` can print hundreds of megabytes. Reading continuously is what keeps a
pipe or an SSH channel from filling up and stalling the command; keeping only the tail is
what keeps that from filling the bot's memory. Failure reports only ever show the last lines.
"""

from __future__ import annotations

OUTPUT_LIMIT = 1 << 20  # bytes kept per stream (stdout, stderr) of one command


class OutputTail:
    """The last `limit` bytes of a stream, and how many bytes came before them."""

    def __init__(self, limit: int = OUTPUT_LIMIT) -> None:
        self.limit = limit
        self.total = 0
        self._buffer = bytearray()

    def add(self, data: bytes) -> None:
        self.total += len(data)
        self._buffer += data
        # Trim only once twice the limit is held, so trimming costs O(1) per byte overall.
        if len(self._buffer) > 2 * self.limit:
            del self._buffer[: len(self._buffer) - self.limit]

    def text(self) -> str:
        """The kept bytes as text; a first line says how much was dropped, if anything was."""
        kept = bytes(self._buffer[-self.limit :])
        text = kept.decode("utf-8", errors="replace")
        dropped = self.total - len(kept)
        if dropped:
            return f"[{dropped} earlier bytes of output not kept]\n{text}"
        return text
