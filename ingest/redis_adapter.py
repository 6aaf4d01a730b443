"""The one place that reaches past redis-py's public API; tests/test_redis_adapter.py pins what it relies on.

What it relies on (redis-py 5.3 to 8.x; `pyproject.toml` bounds the version):
- a `Pipeline`'s queued commands are `pipe.command_stack` (a list of `(args, options)`), its scripts
  `pipe.scripts` (loaded by `pipe.load_scripts()`), its connection `pipe.connection` (None until it has
  one; `pipe.connection_pool.get_connection()` gives one, with no command name), `pipe.watching`, and
  `pipe.parse_response(connection, command_name)` reads one reply (raising the reply's ResponseError);
- a `Connection` packs commands (`pack_commands`), sends packed bytes (`send_packed_command`), sends a
  command (`send_command`) and reads one reply (`read_response`) apart, and `disconnect()`s; with
  hiredis, its `_parser` holds hiredis's `_reader` (`gets()`: a reply, or `NOT_ENOUGH_DATA` of
  `redis._parsers.hiredis` until more is fed) and reads more into it with `read_from_socket()` (which
  lets a reset socket's OSError through: `read_response` would have raised it as ConnectionError);
- a `ConnectionPool` exposes `connection_kwargs` and `connection_class` (to make a pool like it),
  `get_connection()` and `release(connection)`;
- `redis.connection.PythonRespSerializer(buffer_cutoff, encode)` and `Encoder(...).encode` pack a
  command whose long values go to the socket uncopied.

With these a runner sends a batch's MULTI ... EXEC without waiting for the replies (reading them a batch
later), with commands it packed itself among redis-py's (`queue_packed`), and sends its next read before
handling the entries in hand.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import redis
from redis._parsers.hiredis import NOT_ENOUGH_DATA
from redis.connection import Connection, Encoder, PythonRespSerializer
from redis.exceptions import ExecAbortError

from tickerdash.ingest.cluster import AnyRedis, node_client
from tickerdash.ingest.contract.tick_entries import RawEntry
from tickerdash.ingest.redis_server import no_silent_retries

BUFFER_CUTOFF = 6_000  # redis-py's own: values longer than this go to the socket as they are


def client_on_own_pool(client: redis.Redis, **overrides: Any) -> redis.Redis:
    """A client to the same server on a connection pool of its own, with some connection options changed;
    whatever the given client's retry policy, this one never re-sends a command (`no_silent_retries`)."""
    pool = client.connection_pool
    options = {**pool.connection_kwargs, "retry": no_silent_retries(), **overrides}
    return redis.Redis(connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **options))


def bulk_client(client: redis.Redis) -> redis.Redis:
    """A client to the same server whose commands send large values without copying them.

    hiredis packs each command into one new bytes object, so a 300 kB batch entry is copied once more
    before the socket copies it; redis-py's Python packer hands memoryviews and long values to
    `sendall` as they are. Replies are still parsed by hiredis.
    """
    packer = PythonRespSerializer(BUFFER_CUTOFF, Encoder("utf-8", "strict", False).encode)
    return client_on_own_pool(client, command_packer=packer, decode_responses=False)


def _raw(response: Any, **_: Any) -> Any:
    return response


def raw_client(client: redis.Redis) -> redis.Redis:
    """A client on the same pool that returns stream replies unparsed (flat field lists: faster)."""
    raw = redis.Redis(connection_pool=client.connection_pool)
    for command in ("XREADGROUP", "XAUTOCLAIM", "XRANGE"):
        raw.set_response_callback(command, _raw)
    return raw


class PerNode:
    """A client derived from the client of the primary that holds a key's slot (`derive(node)`: its raw
    twin, say), made once per primary; on a standalone server, one client for every key."""

    def __init__(self, client: AnyRedis, derive: Callable[[redis.Redis], redis.Redis]) -> None:
        self.client = client
        self.derive = derive
        self._made: dict[int, tuple[redis.Redis, redis.Redis]] = {}  # id of a node's client: it, and its derived

    def __call__(self, key: str) -> redis.Redis:
        """The derived client of the key's primary (after a failover, of the new primary)."""
        node = node_client(self.client, key)
        made = self._made.get(id(node))
        if made is None or made[0] is not node:
            made = self._made[id(node)] = (node, self.derive(node))
        return made[1]

    def made(self) -> list[redis.Redis]:
        """Every client derived so far (to close their pools)."""
        return [derived for _, derived in self._made.values()]


def stream_items(response: Any) -> Iterator[tuple[str, Sequence[RawEntry]]]:
    """(stream, entries) pairs of a raw XREAD/XREADGROUP reply, RESP2 array or RESP3 map alike."""
    if not response:
        return
    pairs = response.items() if isinstance(response, dict) else response  # RESP3 map or RESP2 array
    for stream, entries in pairs:
        yield stream.decode() if isinstance(stream, bytes) else stream, entries


@dataclass(frozen=True, slots=True)
class PackedCommands:
    """Commands already packed as the RESP a client sends (`count` of them, in `data`), queued on a
    transaction as one item of its command stack (`queue_packed`)."""

    data: bytes
    count: int


def queue_packed(pipe: redis.client.Pipeline, data: bytes, count: int) -> None:
    """Queue `count` commands packed in `data` on a transaction sent by `send_transaction` (redis-py's own
    `execute` cannot send them: it refuses the stack)."""
    if count:
        pipe.command_stack.append(((PackedCommands(data, count),), {}))


def _replies_expected(pipe: redis.client.Pipeline) -> int:
    return sum(args[0].count if isinstance(args[0], PackedCommands) else 1 for args, _ in pipe.command_stack)


SENDING = "_tickerdash_sending"  # a pipeline's attribute: the Future of its transaction sent in the background
# below this many bytes a transaction is sent at once even when the background is asked for: the socket
# takes it without waiting, and handing it to a thread would cost a GIL switch (up to 5 ms) before it goes
BACKGROUND_MIN_BYTES = 1 << 20


@functools.cache
def _sender() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=2, thread_name_prefix="transaction-send")


def send_transaction(pipe: redis.client.Pipeline, *, background: bool = False) -> None:
    """Send MULTI, the pipeline's queued commands (packed ones as they are) and EXEC on its connection,
    without reading the replies.

    In the `background`, a transaction of BACKGROUND_MIN_BYTES or more goes to the socket from a helper
    thread (the call returns at once), and `confirm_transaction` (or `abandon_transaction`) waits for it:
    a large batch's transaction holds megabytes of closed bars, which Redis takes in only as fast as it
    queues them, while the caller could compute the next batch.
    """
    if pipe.scripts:
        pipe.load_scripts()
    if pipe.connection is None:
        pipe.connection = pipe.connection_pool.get_connection()
    connection = pipe.connection
    chunks: list[bytes | memoryview] = []
    commands: list[tuple[Any, ...]] = [("MULTI",)]
    for args, _ in pipe.command_stack:
        if isinstance(args[0], PackedCommands):
            chunks += connection.pack_commands(commands)
            chunks.append(args[0].data)
            commands = []
        else:
            commands.append(args)
    commands.append(("EXEC",))
    chunks += connection.pack_commands(commands)
    if background and sum(len(chunk) for chunk in chunks) >= BACKGROUND_MIN_BYTES:
        setattr(pipe, SENDING, _sender().submit(connection.send_packed_command, chunks))
    else:
        connection.send_packed_command(chunks)


def _sent(pipe: redis.client.Pipeline) -> None:
    """Wait until the pipeline's transaction sent in the background is on the socket (raise its error)."""
    sending: Future[None] | None = getattr(pipe, SENDING, None)
    if sending is not None:
        setattr(pipe, SENDING, None)
        sending.result()


def confirm_transaction(pipe: redis.client.Pipeline) -> None:
    """Read the replies of a transaction `send_transaction` sent; raise WatchError if it was not applied,
    or its first error."""
    _sent(pipe)
    connection = pipe.connection
    assert connection is not None
    # MULTI's OK, then QUEUED for each command
    errors = [reply for reply in _read_replies(connection, _replies_expected(pipe) + 1) if isinstance(reply, Exception)]
    try:
        replies = pipe.parse_response(connection, "_")
    except ExecAbortError:
        raise errors[0] if errors else ExecAbortError("transaction discarded") from None
    pipe.watching = False  # EXEC ends the WATCH
    if replies is None:
        raise redis.WatchError("Watched variable changed.")
    failed = [reply for reply in replies if isinstance(reply, redis.ResponseError)]
    if errors or failed:
        raise (errors or failed)[0]


def _read_replies(connection: Connection, count: int) -> list[Any]:
    """The next `count` replies on the connection, errors returned, not raised.

    A batch may queue thousands of packed commands, each answered QUEUED: read through redis-py's layers
    a reply costs 1.5-3 us of Python, straight off hiredis's reader ~0.3 us. Without hiredis's reader
    (redis-py's own parser) they are read one by one through the connection.
    """
    parser: Any = getattr(connection, "_parser", None)
    reader = getattr(parser, "_reader", None)
    if reader is None or not hasattr(parser, "read_from_socket"):
        replies: list[Any] = []
        for _ in range(count):
            try:
                replies.append(connection.read_response())
            except redis.ResponseError as exc:
                replies.append(exc)
        return replies
    replies = []
    while len(replies) < count:
        reply = reader.gets()
        if reply is NOT_ENOUGH_DATA:
            try:
                parser.read_from_socket()
            except OSError as exc:  # a reset socket: redis-py's own reads raise it as ConnectionError, and so do we
                connection.disconnect()
                raise redis.ConnectionError(f"Error while reading from Redis: {exc}") from exc
            continue
        if isinstance(reply, redis.ConnectionError):
            raise reply
        replies.append(reply)
    return replies


def execute_transaction(pipe: redis.client.Pipeline) -> None:
    """Send a transaction and read its replies (`send_transaction`, then `confirm_transaction`)."""
    send_transaction(pipe)
    confirm_transaction(pipe)


def abandon_transaction(pipe: redis.client.Pipeline) -> None:
    """Give back a transaction's connection with its replies unread (closed: they would be read as the next
    command's)."""
    with contextlib.suppress(Exception):  # (what failed is why it is abandoned)
        _sent(pipe)  # never close a socket under the thread still writing to it
    if pipe.connection is not None:
        pipe.connection.disconnect()
    pipe.watching = False  # a closed connection watches nothing: no UNWATCH to send
    pipe.reset()


def take_connection(client: redis.Redis) -> Connection:
    """A connection of the client's pool, for commands whose replies are read later (`release_connection`)."""
    return client.connection_pool.get_connection()


def send_command(connection: Connection, args: Sequence[Any]) -> None:
    """Send one command on a connection from `take_connection`, without reading its reply (`read_reply`)."""
    connection.send_command(*args)


def read_reply(connection: Connection) -> Any:
    """Read the reply of the command `send_command` sent."""
    return connection.read_response()


def release_connection(client: redis.Redis, connection: Connection, *, close: bool = False) -> None:
    """Give a connection from `take_connection` back to its pool (closed first, with any unread reply)."""
    if close:
        connection.disconnect()
    client.connection_pool.release(connection)
