"""One asyncio connection to Redis on which concurrent callers' commands are pipelined.

Redis answers a connection's commands in the order they came. So rather than a pool of
blocking connections — where a read holds one, sends, and waits idle for the answer, and on an
event loop the whole server waits with it — every caller writes its commands to the one
connection as soon as it has them and awaits a future, and the protocol hands the answers out in
order as they arrive. Under load, the commands of many requests go out and come back in the same
few socket reads and writes.

A caller's commands come already packed (RESP), with the number of answers they get back. Error
replies are returned as `hiredis.ReplyError` values, not raised: a caller sees all its answers,
and the connection stays in step. A connection that fails, or whose oldest call times out, fails
every call still waiting on it with `redis.ConnectionError` or `redis.TimeoutError` and is
closed (answers can no longer be matched to callers); the next call connects again.

A caller may give up at any await — a request's deadline (`asyncio.timeout`) cancels it. Its
call stays queued: the commands are on the wire and their answers will come, in their place,
and are dropped when they do; only then do the answers behind them reach their callers. Taking
the call out of the queue instead would hand its answers to the next caller. Nor does giving up
cancel a connection that other callers wait for. A call nobody waits for any more still times
the connection out: a server silent for `timeout_s` is not trusted with the next call.

Where it connects (host, TLS, AUTH, timeouts) comes as an `Endpoint`, which
`featurestore.redis_client.make_pipe` builds from the URL with the same rules as every other
client of ours.

>>> pipe = RedisPipe(Endpoint("Redis at redis://127.0.0.1:6379/0"))
>>> await pipe.execute(b"*1\\r\\n$4\\r\\nPING\\r\\n", 1)  # doctest: +SKIP
[b'PONG']
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import hiredis
import redis

__all__ = ["Endpoint", "RedisPipe", "array_head", "bulks", "pack"]


def pack(*parts: bytes) -> bytes:
    """One Redis command as RESP: an array of bulk strings.

    >>> pack(b"GET", b"k")
    b'*2\\r\\n$3\\r\\nGET\\r\\n$1\\r\\nk\\r\\n'
    """
    return array_head(len(parts)) + bulks(parts)


def array_head(count: int) -> bytes:
    """The head of a command of `count` parts, for commands packed in pieces."""
    return b"*%d\r\n" % count


def bulks(parts: Iterable[bytes]) -> bytes:
    """Command parts as RESP bulk strings, to follow an `array_head`."""
    return b"".join(b"$%d\r\n%s\r\n" % (len(part), part) for part in parts)


@dataclass(frozen=True)
class Endpoint:
    """Where a pipe connects and what it sends first on each new connection."""

    where: str  # how messages name it: "Redis at <the URL without its password>"
    host: str = "127.0.0.1"
    port: int = 6379
    path: str | None = None  # a unix socket, instead of host and port
    tls: ssl.SSLContext | None = None  # built once, shared by every connection
    server_hostname: str | None = None  # the name TLS checks (None: `host`)
    # AUTH and SELECT, packed; out of the repr: AUTH holds the password.
    setup: bytes = field(default=b"", repr=False)
    setup_count: int = 0  # answers to `setup`
    timeout_s: float = 30.0  # for the oldest call's answers
    connect_timeout_s: float = 5.0  # for the connection, TLS handshake and setup


@dataclass(eq=False)
class _Call:
    future: asyncio.Future[list[Any]]
    count: int  # answers expected
    answers: list[Any] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None


class _Connection(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop, where: str, timeout_s: float) -> None:
        self.loop = loop
        self.where = where
        self.timeout_s = timeout_s
        self.transport: asyncio.Transport | None = None
        self.reader = hiredis.Reader()
        self.pending: deque[_Call] = deque()
        self.failed: redis.RedisError | None = None  # why this connection is done

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's do not subclass asyncio.Transport).
        self.transport = cast(asyncio.Transport, transport)

    def call(self, packed: bytes, count: int) -> asyncio.Future[list[Any]]:
        future = self.loop.create_future()
        transport = self.transport
        if transport is None:  # failed (`fail` drops the transport): the next call reconnects
            error = self.failed or redis.ConnectionError(f"{self.where}: never opened")
            self.fail(error)
            future.set_exception(error)
            return future
        call = _Call(future, count)
        call.timer = self.loop.call_later(self.timeout_s, self._expire, call)
        self.pending.append(call)
        transport.write(packed)
        return future

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        pending = self.pending
        while True:
            try:
                reply = self.reader.gets()
            except hiredis.ProtocolError as exc:
                self.fail(redis.ConnectionError(f"{self.where} sent something not RESP: {exc}"))
                return
            if reply is False:
                return
            if not pending:
                self.fail(redis.ConnectionError(f"{self.where} answered a command never sent"))
                return
            call = pending[0]
            call.answers.append(reply)
            if len(call.answers) == call.count:
                pending.popleft()
                if call.timer is not None:
                    call.timer.cancel()
                if not call.future.done():  # not given up on by its caller
                    call.future.set_result(call.answers)

    def connection_lost(self, exc: Exception | None) -> None:
        why = f": {exc}" if exc else " (closed by the server)"
        self.fail(redis.ConnectionError(f"lost the connection to {self.where}{why}"))

    def _expire(self, call: _Call) -> None:
        # Even if its caller gave up (its future is done): no answer for so long is a server
        # or a link that is stuck, and the calls behind it would wait just as long.
        if call not in self.pending:
            return
        self.fail(redis.TimeoutError(f"{self.where} did not answer within {self.timeout_s:g} s"))

    def fail(self, error: redis.RedisError) -> None:
        if self.failed is None:
            self.failed = error
        transport, self.transport = self.transport, None
        pending, self.pending = self.pending, deque()
        if self.loop.is_closed():
            # Its loop is gone (a test client's, say): nothing can run on it any more, and the
            # socket is closed with the transport when it is collected.
            return
        if transport is not None:
            transport.close()
        for call in pending:
            if call.timer is not None:
                call.timer.cancel()
            if not call.future.done():
                call.future.set_exception(error)


class RedisPipe:
    """Pipelined commands on one connection per event loop (a test's app may run on several
    loops in turn: a call on a new loop opens a new connection)."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._connection: _Connection | None = None
        self._connecting: asyncio.Task[_Connection] | None = None

    async def execute(self, packed: bytes, count: int) -> list[Any]:
        """The `count` answers to the packed commands, in order."""
        connection = self._connection
        if (
            connection is None
            or connection.failed is not None
            or connection.loop is not asyncio.get_running_loop()
        ):
            connection = await self._connect()
        return await connection.call(packed, count)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.fail(redis.ConnectionError(f"{self._connection.where}: closed"))
            self._connection = None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        task = self._connecting
        # A done task is stale: its connection was taken (and has failed since), or its failure
        # was already told to the callers that waited.
        if task is None or task.get_loop() is not loop or task.done():
            task = self._connecting = loop.create_task(self._open(loop))
        try:
            # Shielded: a caller that gives up must not cancel the connection others wait for.
            return await asyncio.shield(task)
        finally:
            if self._connecting is task and task.done():
                self._connecting = None

    async def _open(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        end = self.endpoint
        where = end.where

        def protocol() -> _Connection:
            return _Connection(loop, where, end.timeout_s)

        try:
            async with asyncio.timeout(end.connect_timeout_s):
                if end.path is not None:
                    _, connection = await loop.create_unix_connection(protocol, end.path)
                else:
                    _, connection = await loop.create_connection(
                        protocol,
                        end.host,
                        end.port,
                        ssl=end.tls,
                        server_hostname=(end.server_hostname or end.host) if end.tls else None,
                    )
                if end.setup_count:
                    for answer in await connection.call(end.setup, end.setup_count):
                        if isinstance(answer, hiredis.ReplyError):
                            connection.fail(redis.ConnectionError(f"{where}: {answer}"))
                            raise redis.AuthenticationError(f"{where} refused us: {answer}")
        except TimeoutError:
            raise redis.TimeoutError(
                f"{where}: no connection within {end.connect_timeout_s:g} s"
            ) from None
        except OSError as exc:  # ssl.SSLError too: a refused certificate
            raise redis.ConnectionError(f"cannot connect to {where}: {exc}") from exc
        self._connection = connection
        return connection
