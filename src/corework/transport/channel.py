"""A framed message channel over a Unix socket that can carry file descriptors.

Each message is a small pickled ``meta`` tuple (what the message is), optionally followed
by a :class:`~corework.transport.packing.Packed` body and the descriptors of its shared-memory
segments. On the wire::

    header (head length, body length, descriptor count) ─ descriptors ride on it (SCM_RIGHTS)
    [one extra byte per further 250 descriptors]
    head: pickle of (meta, layout)
    body: the packed object's pickle stream

``multiprocessing.connection.Connection`` frames messages too, but reads with ``read()``,
which drops descriptors; this reads the header with ``recvmsg``.
"""

from __future__ import annotations

import array
import contextlib
import os
import pickle
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .packing import NO_LAYOUT, Layout, Packed, unpack
from .picklers import PROTOCOL

_HEADER = struct.Struct("!IQH")
_FDS_PER_SEND = 250  # the kernel takes at most 253 per message
_FD_SPACE = socket.CMSG_SPACE(_FDS_PER_SEND * array.array("i").itemsize)
_SMALL = 64 * 1024  # bodies up to this size are copied behind the head: one send


@dataclass
class Message:
    """A received message; call :meth:`unpack` for its body (once)."""

    meta: tuple[Any, ...]
    body: memoryview
    layout: Layout
    fds: list[int]
    fds_lost: bool = False  # the kernel dropped descriptors: this process has too many

    def unpack(self) -> Any:
        """The body's object (maps its segments; owns and closes the descriptors)."""
        if self.fds_lost:
            self.discard()
            raise OSError("a shared-memory descriptor was lost in transit: this process has "
                          "too many open files (raise `ulimit -n`, or keep fewer results)")
        fds, self.fds = self.fds, []
        return unpack(self.body, self.layout, fds)

    def discard(self) -> None:
        """Close the descriptors of a message that will not be unpacked."""
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds = []


class Channel:
    """One end of a socket pair, speaking in :class:`Message` s. Not thread-safe: callers
    serialize sends (and receives) themselves."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.closed = False

    @classmethod
    def from_fd(cls, fd: int) -> Channel:
        return cls(socket.socket(fileno=fd))

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        self.closed = True
        self._sock.close()

    def send(self, meta: tuple[Any, ...], packed: Packed | None = None) -> None:
        """Send ``meta`` and, if given, a packed object with its segments' descriptors."""
        layout = packed.layout if packed is not None else NO_LAYOUT
        head = pickle.dumps((meta, layout), PROTOCOL)
        body = packed.data if packed is not None else b""
        fds = packed.fds if packed is not None else []
        header = _HEADER.pack(len(head), len(body), len(fds))
        if fds:
            self._send_fds(header, fds[:_FDS_PER_SEND])
            for start in range(_FDS_PER_SEND, len(fds), _FDS_PER_SEND):
                self._send_fds(b"\0", fds[start:start + _FDS_PER_SEND])
            header = b""
        if len(body) <= _SMALL:
            self._sock.sendall(header + head + body)
        else:
            self._sock.sendall(header + head)
            self._sock.sendall(body)

    def _send_fds(self, data: bytes, fds: Sequence[int]) -> None:
        rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
        sent = self._sock.sendmsg([data], rights)
        if sent < len(data):
            self._sock.sendall(data[sent:])

    def recv(self) -> Message:
        """The next message; EOFError when the other end has closed."""
        fds: list[int] = []
        try:
            header, lost = self._recv_with_fds(_HEADER.size, fds)
            head_size, body_size, count = _HEADER.unpack(header)
            for _ in range(_FDS_PER_SEND, count, _FDS_PER_SEND):
                lost |= self._recv_with_fds(1, fds)[1]
            buffer = bytearray(head_size + body_size)
            self._recv_into(memoryview(buffer))
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        view = memoryview(buffer)
        meta, layout = pickle.loads(view[:head_size])
        return Message(meta, view[head_size:], layout, fds, lost or len(fds) != count)

    def _recv_with_fds(self, size: int, fds: list[int]) -> tuple[bytes, bool]:
        """Read exactly ``size`` bytes, collecting the descriptors that ride on them; also
        whether some were dropped (too many open files here)."""
        data = b""
        lost = False
        while len(data) < size:
            chunk, ancillary, flags, _ = self._sock.recvmsg(
                size - len(data), _FD_SPACE, socket.MSG_CMSG_CLOEXEC)
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    received = array.array("i")
                    received.frombytes(payload[:len(payload) - len(payload) % received.itemsize])
                    fds.extend(received)
            lost |= bool(flags & socket.MSG_CTRUNC)
            if not chunk:
                raise EOFError
            data += chunk
        return data, lost

    def _recv_into(self, view: memoryview) -> None:
        done = 0
        while done < len(view):
            count = self._sock.recv_into(view[done:])
            if not count:
                raise EOFError
            done += count
