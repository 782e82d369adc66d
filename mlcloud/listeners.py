"""Listening sockets that outlive the instance serving on them (socket activation).

A host owns the listening TCP sockets of the instances it supervises: an instance asks for one
by address and gets a duplicate of the host's socket, so when the instance dies the host still
holds it open. Connections that arrive while no process accepts (the instance is dead, or
starting again) wait in the kernel's backlog and are served by the next instance; none is
refused. SO_REUSEPORT would not do that: a killed listener's queued connections are reset.

The host and the instance talk over a Unix socket pair: the host keeps one end (a
:class:`ListenerBroker`, one per supervised instance, alive across its restarts) and hands the
other to each process it starts, named by the environment variable ``BROKER_FD_ENV``. Requests
are single datagrams: ``listen ADDRESS`` (answered with ``ok`` and the socket's fd, or
``error ERRNO MESSAGE``) and ``release ADDRESS`` (the host closes its socket: the address is no
longer served). Without a broker (a component run outside a host) :func:`listen` binds itself.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import os
import select
import socket
import threading

from mlcloud.settings import split_address

log = logging.getLogger(__name__)

BROKER_FD_ENV = "MLCLOUD_LISTENER_BROKER_FD"
BACKLOG = 1024  # connections the kernel keeps waiting while no instance accepts (capped by somaxconn)
_MAX_REQUEST = 4096


def bind(address: str) -> socket.socket:
    """A listening TCP socket on ``host:port``, as aiohttp's own site would make it."""
    host, port = split_address(address)
    family, kind, proto, _, sockaddr = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


class ListenerBroker:
    """The host's end: binds on request and keeps each listening socket until released or closed."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._end, self.child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._end.setblocking(False)
        self.sockets: dict[str, socket.socket] = {}  # by address

    def child_env(self) -> dict[str, str]:
        """What a new child needs to reach this broker (pass ``child_end`` in ``pass_fds`` too).

        Answers a killed child never read are dropped first, so the new one reads its own.
        """
        while select.select([self.child_end], [], [], 0)[0]:
            _, fds, _, _ = socket.recv_fds(self.child_end, _MAX_REQUEST, 1)
            for fd in fds:
                os.close(fd)
        return {BROKER_FD_ENV: str(self.child_end.fileno())}

    def attach(self) -> None:
        """Start answering requests on the running event loop."""
        asyncio.get_running_loop().add_reader(self._end.fileno(), self._answer)

    def _answer(self) -> None:
        try:
            request = self._end.recv(_MAX_REQUEST)
        except BlockingIOError:
            return
        verb, _, address = request.decode().partition(" ")
        if verb == "release":
            sock = self.sockets.pop(address, None)
            if sock is not None:
                sock.close()
            return
        sock = self.sockets.get(address)
        if sock is None:
            try:
                sock = self.sockets[address] = bind(address)
            except (OSError, ValueError) as exc:
                code = getattr(exc, "errno", None) or errno.EINVAL
                self._end.send(f"error {code} {getattr(exc, 'strerror', None) or exc}".encode())
                return
            log.info("%s: host holds the listening socket on %s", self.name, address)
        socket.send_fds(self._end, [b"ok"], [sock.fileno()])

    def close(self) -> None:
        """Stop answering and close every socket: nothing serves these addresses any more."""
        try:
            asyncio.get_running_loop().remove_reader(self._end.fileno())
        except RuntimeError:
            pass
        for sock in self.sockets.values():
            sock.close()
        self.sockets.clear()
        self._end.close()
        self.child_end.close()


class ListenerClient:
    """The instance's end: asks its host for listening sockets (one request at a time)."""

    def __init__(self, fd: int) -> None:
        self._end = socket.socket(fileno=fd)
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls) -> ListenerClient | None:
        fd = os.environ.get(BROKER_FD_ENV)
        return cls(int(fd)) if fd else None

    def listen(self, address: str) -> socket.socket:
        """The host's listening socket on ``address`` (bound now, or kept from an earlier instance)."""
        with self._lock:
            self._end.send(f"listen {address}".encode())
            reply, fds, _, _ = socket.recv_fds(self._end, _MAX_REQUEST, 1)
        if not fds:
            _, code, message = reply.decode().split(" ", 2)
            raise OSError(int(code), message)
        return socket.socket(fileno=fds[0])

    def release(self, address: str) -> None:
        """Tell the host nobody serves ``address`` any more, so it stops queueing connections there."""
        with self._lock:
            self._end.send(f"release {address}".encode())


@functools.cache
def _client() -> ListenerClient | None:
    return ListenerClient.from_env()


async def listen(address: str) -> socket.socket:
    """A listening socket on ``address``: the host's when a host runs this process, else a new one."""
    client = _client()
    if client is None:
        return bind(address)
    return await asyncio.to_thread(client.listen, address)


def release(address: str) -> None:
    """Close the host's socket on ``address`` (no-op without a host): its connections stop queueing."""
    client = _client()
    if client is not None:
        client.release(address)
