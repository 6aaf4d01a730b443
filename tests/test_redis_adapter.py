"""What `ingest.redis_adapter` relies on in redis-py, pinned: an upgrade that changes it fails here first."""

from __future__ import annotations

import pytest
import redis
from redis._parsers import _RESP2Parser

from tickerdash.ingest import redis_adapter as adapter


def packed(client: redis.Redis, commands: list[tuple[str, ...]]) -> bytes:
    """The commands as a connection of the client's pool packs them (what `queue_packed` takes)."""
    connection = client.connection_pool.get_connection()
    try:
        return b"".join(connection.pack_commands(commands))
    finally:
        client.connection_pool.release(connection)


def test_a_transaction_sent_without_its_replies_is_applied_and_its_replies_read_later(
    redis_client: redis.Redis,
) -> None:
    """`send_transaction` queues MULTI ... EXEC on the pipeline's connection; `confirm_transaction` reads
    MULTI's OK, one QUEUED per command and EXEC's replies, and leaves the pipeline reusable."""
    pipe = redis_client.pipeline(transaction=True)
    pipe.set("a", "1")
    pipe.incrby("n", 5)
    assert len(pipe.command_stack) == 2 and pipe.connection is None
    adapter.send_transaction(pipe)
    assert pipe.connection is not None
    adapter.confirm_transaction(pipe)
    pipe.reset()
    assert redis_client.get("a") == b"1" and redis_client.get("n") == b"5"


@pytest.mark.parametrize("parser", ["hiredis", "python"])
def test_packed_commands_go_in_their_place_among_the_queued_ones(redis_client: redis.Redis, parser: str) -> None:
    """`queue_packed` puts commands packed by the caller between redis-py's, in order, within the one
    MULTI ... EXEC; their replies are counted and read (straight off hiredis's reader, or through the
    connection with redis-py's own parser), and a failing one is raised like any other."""
    if parser == "python":
        port = redis_client.connection_pool.connection_kwargs["port"]
        redis_client = redis.Redis(connection_pool=redis.ConnectionPool(port=port, parser_class=_RESP2Parser))
    two = packed(redis_client, [("RPUSH", "order", "b"), ("RPUSH", "order", "c")])
    failing = packed(redis_client, [("INCR", "order")])
    pipe = redis_client.pipeline(transaction=True)
    pipe.rpush("order", "a")
    adapter.queue_packed(pipe, two, 2)
    adapter.queue_packed(pipe, b"", 0)  # nothing to send: nothing queued
    pipe.rpush("order", "d")
    assert len(pipe.command_stack) == 3
    adapter.execute_transaction(pipe)
    pipe.reset()
    assert redis_client.lrange("order", 0, -1) == [b"a", b"b", b"c", b"d"]
    adapter.queue_packed(pipe, failing, 1)
    pipe.rpush("order", "e")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        adapter.execute_transaction(pipe)
    pipe.reset()
    assert redis_client.lrange("order", -1, -1) == [b"e"]  # the others applied, as Redis does


def test_a_transaction_sent_in_the_background_is_confirmed_or_abandoned_once_on_the_socket(
    redis_client: redis.Redis,
) -> None:
    """`send_transaction(background=True)` hands a large transaction to a thread; confirming waits for the
    bytes (it is applied whole), and abandoning one waits for them before closing the socket. A small one
    is sent at once."""
    many = packed(redis_client, [("RPUSH", "big", "x" * 100)] * 20_000)  # ~2.5 MB
    pipe = redis_client.pipeline(transaction=True)
    adapter.queue_packed(pipe, many, 20_000)
    pipe.set("after", "1")
    adapter.send_transaction(pipe, background=True)
    assert getattr(pipe, adapter.SENDING) is not None
    adapter.confirm_transaction(pipe)
    pipe.reset()
    assert redis_client.llen("big") == 20_000 and redis_client.get("after") == b"1"
    pipe.set("small", "1")
    adapter.send_transaction(pipe, background=True)
    assert getattr(pipe, adapter.SENDING, None) is None
    adapter.confirm_transaction(pipe)
    pipe.reset()
    assert redis_client.get("small") == b"1"
    adapter.queue_packed(pipe, many, 20_000)
    adapter.send_transaction(pipe, background=True)
    adapter.abandon_transaction(pipe)
    assert getattr(pipe, adapter.SENDING) is None and pipe.connection is None
    assert redis_client.llen("big") in (20_000, 40_000)  # sent whole before the close, or not applied


def test_a_packed_command_refused_when_queued_discards_the_whole_transaction(redis_client: redis.Redis) -> None:
    """A packed command Redis refuses as it queues it (wrong arguments) aborts the transaction: its error is
    raised and nothing of the transaction is applied."""
    refused = packed(redis_client, [("XADD", "stream", "MAXLEN")])
    pipe = redis_client.pipeline(transaction=True)
    pipe.set("before", "1")
    adapter.queue_packed(pipe, refused, 1)
    with pytest.raises(redis.ResponseError, match="wrong number of arguments"):
        adapter.execute_transaction(pipe)
    pipe.reset()
    assert redis_client.get("before") is None and redis_client.ping()


def test_a_transaction_whose_watched_key_changed_reports_a_watch_error(redis_client: redis.Redis) -> None:
    """EXEC's nil reply (a WATCHed key changed) surfaces as WatchError, and the WATCH is over."""
    pipe = redis_client.pipeline(transaction=True)
    pipe.watch("fence")
    redis_client.set("fence", "moved")
    pipe.multi()
    pipe.set("b", "1")
    adapter.send_transaction(pipe)
    try:
        adapter.confirm_transaction(pipe)
        raise AssertionError("a WatchError was expected")
    except redis.WatchError:
        pass
    assert pipe.watching is False
    pipe.reset()
    assert redis_client.get("b") is None


def test_an_error_queued_in_a_transaction_is_raised_on_confirmation(redis_client: redis.Redis) -> None:
    """A command that fails inside EXEC is raised as its ResponseError (the others applied, as Redis does)."""
    redis_client.set("text", "x")
    pipe = redis_client.pipeline(transaction=True)
    pipe.incr("text")
    pipe.set("c", "1")
    adapter.send_transaction(pipe)
    try:
        adapter.confirm_transaction(pipe)
        raise AssertionError("a ResponseError was expected")
    except redis.ResponseError:
        pass
    pipe.reset()
    assert redis_client.get("c") == b"1"


def test_an_abandoned_transaction_closes_its_connection(redis_client: redis.Redis) -> None:
    """A transaction given up with its replies unread leaves no reply behind for the next command."""
    pipe = redis_client.pipeline(transaction=True)
    pipe.set("d", "1")
    adapter.send_transaction(pipe)
    connection = pipe.connection
    assert connection is not None
    adapter.abandon_transaction(pipe)
    assert pipe.connection is None and pipe.command_stack == []
    assert redis_client.ping()


class ResetSocket:
    """A socket the peer has reset: reads raise ECONNRESET (what a Redis killing the client can cause)."""

    def __init__(self, real: object) -> None:
        self.real = real

    def recv_into(self, buffer: object, *args: object) -> int:
        raise ConnectionResetError(104, "Connection reset by peer")

    def __getattr__(self, name: str) -> object:
        return getattr(self.real, name)


def test_a_connection_reset_while_replies_are_read_is_a_connection_error(redis_client: redis.Redis) -> None:
    """hiredis's `read_from_socket` lets a reset socket's OSError through; confirmation raises it as the
    ConnectionError redis-py's own reads raise (what callers treat as Redis down), and closes the connection."""
    pipe = redis_client.pipeline(transaction=True)
    pipe.set("r", "1")
    adapter.send_transaction(pipe)
    connection = pipe.connection
    assert connection is not None
    parser = connection._parser  # type: ignore[union-attr]
    if not hasattr(parser, "read_from_socket"):
        pytest.skip("redis-py's own parser reads through read_response, which wraps OSError itself")
    parser._sock = ResetSocket(parser._sock)
    with pytest.raises(redis.ConnectionError, match="reset by peer"):
        adapter.confirm_transaction(pipe)
    assert connection._sock is None  # type: ignore[union-attr]
    adapter.abandon_transaction(pipe)
    assert redis_client.ping()


def test_a_command_sent_ahead_is_read_later_on_a_pool_connection(redis_client: redis.Redis) -> None:
    """`take_connection` gives a pool connection on which a command is sent, and its reply read, apart."""
    raw = adapter.raw_client(redis_client)
    redis_client.xadd("s", {"f": "v"})
    connection = adapter.take_connection(raw)
    adapter.send_command(connection, ["XRANGE", "s", "-", "+"])
    reply = adapter.read_reply(connection)
    adapter.release_connection(raw, connection)
    assert [(fields) for _, fields in reply] == [[b"f", b"v"]]


def test_raw_stream_replies_are_flat_lists_and_stream_items_reads_them(redis_client: redis.Redis) -> None:
    """The raw client leaves XREADGROUP replies unparsed; `stream_items` gives (stream, entries) pairs."""
    redis_client.xgroup_create("t", "g", id="0", mkstream=True)
    redis_client.xadd("t", {"k": "1"})
    raw = adapter.raw_client(redis_client)
    reply = raw.execute_command("XREADGROUP", "GROUP", "g", "c", "COUNT", 10, "STREAMS", "t", ">")
    [(stream, entries)] = list(adapter.stream_items(reply))
    assert stream == "t" and entries[0][1] == [b"k", b"1"]


def test_a_client_on_its_own_pool_copies_the_connection_options_and_never_retries(redis_client: redis.Redis) -> None:
    """`client_on_own_pool` reads the pool's `connection_kwargs` and `connection_class`; its retry re-sends nothing."""
    own = adapter.client_on_own_pool(redis_client, socket_timeout=7)
    assert own.connection_pool is not redis_client.connection_pool
    assert own.connection_pool.connection_class is redis_client.connection_pool.connection_class
    assert own.connection_pool.connection_kwargs["socket_timeout"] == 7
    assert own.connection_pool.connection_kwargs["retry"].get_retries() == 0
    assert own.ping() and adapter.bulk_client(redis_client).ping()
