"""A TCP proxy on loopback in front of a real Redis that drops connections where a test says.

It reads the RESP commands each client sends and asks a policy, command by command, what to do:
forward it, drop the connection before Redis sees it, or forward it and drop the connection as soon
as Redis answers (Redis executed it; the client never gets the reply). `kill_all` drops every open
connection at once, wherever its client is.
"""

from __future__ import annotations

import contextlib
import enum
import socket
import threading
from collections.abc import Callable, Iterator, Sequence


class Drop(enum.Enum):
    """What to do with one command."""

    NO = "forward"
    BEFORE = "drop before Redis reads it"
    REPLY = "drop once Redis has answered it"


Policy = Callable[[Sequence[bytes]], Drop]


def _commands(buffer: bytearray) -> Iterator[tuple[int, list[bytes]]]:
    """(end offset, args) of every complete RESP array command at the start of `buffer`."""
    at = 0
    while at < len(buffer):
        if buffer[at : at + 1] != b"*":
            raise ValueError(f"not a RESP array command: {bytes(buffer[at : at + 20])!r}")
        line_end = buffer.find(b"\r\n", at)
        if line_end < 0:
            return
        count, pos, args = int(buffer[at + 1 : line_end]), line_end + 2, []
        for _ in range(count):
            size_end = buffer.find(b"\r\n", pos)
            if size_end < 0:
                return
            size = int(buffer[pos + 1 : size_end])
            if size_end + 2 + size + 2 > len(buffer):
                return
            args.append(bytes(buffer[size_end + 2 : size_end + 2 + size]))
            pos = size_end + 2 + size + 2
        at = pos
        yield at, args


class _Pair:
    """One client connection and its connection to Redis."""

    def __init__(self, proxy: DroppingProxy, client: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream = socket.create_connection(("127.0.0.1", proxy.redis_port))
        self.swallow_reply = threading.Event()  # the next bytes from Redis end the connection instead
        self.closed = threading.Event()

    def close(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    def pump_commands(self) -> None:
        buffer = bytearray()
        try:
            while not self.closed.is_set():
                data = self.client.recv(1 << 16)
                if not data:
                    break
                buffer += data
                sent = 0
                for end, args in _commands(buffer):
                    action = self.proxy.decide(args)
                    if action is Drop.BEFORE:
                        self.upstream.sendall(buffer[:sent])  # the commands before it, if pipelined
                        self.proxy.count(action)
                        return
                    if action is Drop.REPLY:
                        self.swallow_reply.set()
                        self.upstream.sendall(buffer[:end])
                        self.proxy.count(action)
                        return  # the reply pump closes the pair when Redis answers
                    sent = end
                if sent:
                    self.upstream.sendall(buffer[:sent])
                    del buffer[:sent]
        except OSError:
            pass
        finally:
            if not self.swallow_reply.is_set():
                self.close()

    def pump_replies(self) -> None:
        try:
            while not self.closed.is_set():
                data = self.upstream.recv(1 << 16)
                if not data or self.swallow_reply.is_set():
                    break
                self.client.sendall(data)
        except OSError:
            pass
        finally:
            self.close()


class DroppingProxy:
    """Listens on a free loopback port and forwards to Redis on `redis_port`, dropping where `policy` says."""

    def __init__(self, redis_port: int, policy: Policy | None = None) -> None:
        self.redis_port = redis_port
        self.policy: Policy = policy or (lambda args: Drop.NO)
        self.drops = {Drop.BEFORE: 0, Drop.REPLY: 0}
        self.kills = 0
        self._lock = threading.Lock()
        self._pairs: list[_Pair] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def decide(self, args: Sequence[bytes]) -> Drop:
        with self._lock:
            return self.policy(args)

    def count(self, action: Drop) -> None:
        with self._lock:
            self.drops[action] += 1

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                pair = _Pair(self, client)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs = [p for p in self._pairs if not p.closed.is_set()]
                self._pairs.append(pair)
            threading.Thread(target=pair.pump_commands, daemon=True).start()
            threading.Thread(target=pair.pump_replies, daemon=True).start()

    def kill_all(self) -> int:
        """Drop every open connection now; returns how many."""
        with self._lock:
            pairs, self._pairs = [p for p in self._pairs if not p.closed.is_set()], []
            self.kills += len(pairs)
        for pair in pairs:
            pair.close()
        return len(pairs)

    def close(self) -> None:
        """Stop listening and drop every connection."""
        self._listener.close()
        self.kill_all()

    def __enter__(self) -> DroppingProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
