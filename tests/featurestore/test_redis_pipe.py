"""The pipelined asyncio Redis connection (featurestore/redis_pipe.py, built by
featurestore/redis_client.py) on a real Redis: many concurrent callers each get their own
answers, error replies stay in step, a lost or silent server fails the calls waiting on it with
a clear error and the next call connects again; callers that give up (a deadline) leave the
connection in step, on a Redis of the test's own that is stopped (SIGSTOP) and resumed."""

from __future__ import annotations

import asyncio
import random
import uuid
from pathlib import Path

import hiredis
import pytest
import redis as redis_lib

from featurestore.config import RedisSettings
from featurestore.redis_client import STORE, Profile, make_pipe
from featurestore.redis_pipe import RedisPipe, pack
from featurestore.services import free_port
from tests.redis_faults import own_redis

pytestmark = pytest.mark.integration


def pipe_to(url: str, profile: Profile = STORE) -> RedisPipe:
    return make_pipe(RedisSettings(url=url), profile)


def test_concurrent_callers_get_their_own_answers(redis: str) -> None:
    prefix = f"test-pipe-{uuid.uuid4().hex[:8]}"
    rng = random.Random(7)
    values = {f"{prefix}:{i}": rng.randbytes(rng.choice([0, 1, 100, 70_000])) for i in range(300)}
    client = redis_lib.Redis.from_url(redis)
    client.mset(values)
    keys = list(values)

    async def main() -> None:
        pipe = pipe_to(redis)

        async def one(chosen: list[str]) -> None:
            await asyncio.sleep(rng.random() / 1000)
            answers = await pipe.execute(b"".join(pack(b"GET", k.encode()) for k in chosen), 3)
            assert answers == [values[k] for k in chosen]

        await asyncio.gather(*(one(rng.sample(keys, 3)) for _ in range(2_000)))
        pipe.close()

    asyncio.run(main())
    client.delete(*keys)


def test_error_replies_are_answers_and_the_connection_stays_in_step(redis: str) -> None:
    key = f"test-pipe-{uuid.uuid4().hex[:8]}"

    async def main() -> None:
        pipe = pipe_to(redis)
        commands = pack(b"SET", key.encode(), b"text") + pack(b"INCR", key.encode())
        ok, error = await pipe.execute(commands + b"", 2)
        assert ok == b"OK"
        assert isinstance(error, hiredis.ReplyError)
        assert "not an integer" in str(error)
        assert await pipe.execute(pack(b"GET", key.encode()) + pack(b"DEL", key.encode()), 2) == [
            b"text",
            1,
        ]
        pipe.close()

    asyncio.run(main())


def test_the_url_selects_the_database(redis: str) -> None:
    key = f"test-pipe-{uuid.uuid4().hex[:8]}"
    url = redis.rsplit("/", 1)[0] + "/3"

    async def main() -> None:
        pipe = pipe_to(url)
        await pipe.execute(pack(b"SET", key.encode(), b"in-3", b"PX", b"60000"), 1)
        pipe.close()

    asyncio.run(main())
    assert redis_lib.Redis.from_url(url).get(key) == b"in-3"
    assert redis_lib.Redis.from_url(redis).get(key) is None


def test_a_lost_connection_fails_its_waiting_calls_and_the_next_call_reconnects(
    redis: str,
) -> None:
    client = redis_lib.Redis.from_url(redis)
    waiting = f"test-pipe-{uuid.uuid4().hex[:8]}"

    async def main() -> None:
        pipe = pipe_to(redis)
        [first_id] = await pipe.execute(pack(b"CLIENT", b"ID"), 1)
        blocked = asyncio.ensure_future(pipe.execute(pack(b"BLPOP", waiting.encode(), b"5"), 1))
        await asyncio.sleep(0.1)
        client.client_kill_filter(_id=first_id)
        with pytest.raises(redis_lib.ConnectionError, match="lost the connection to Redis at"):
            await blocked
        [second_id] = await pipe.execute(pack(b"CLIENT", b"ID"), 1)
        assert second_id != first_id
        pipe.close()

    asyncio.run(main())


def test_no_server_says_which_and_where() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"

    async def main() -> None:
        pipe = pipe_to(url)
        with pytest.raises(redis_lib.ConnectionError, match=f"cannot connect to Redis at {url}"):
            await pipe.execute(pack(b"PING"), 1)

    asyncio.run(main())


def test_a_silent_server_times_out_every_waiting_call() -> None:
    async def main() -> None:
        async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while await reader.read(65_536):
                pass  # reads every command, answers none
            writer.close()

        server = await asyncio.start_server(swallow, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        pipe = pipe_to(f"redis://127.0.0.1:{port}/0", Profile("test", 0.2, 5.0))
        calls = [pipe.execute(pack(b"PING"), 1) for _ in range(5)]
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(r, redis_lib.TimeoutError) for r in results), results
        assert "did not answer within 0.2 s" in str(results[0])
        with pytest.raises(redis_lib.TimeoutError):  # a new connection, just as silent
            await pipe.execute(pack(b"PING"), 1)
        pipe.close()
        await asyncio.sleep(0.05)  # the server's side sees the close and closes too
        server.close()
        await server.wait_closed()

    asyncio.run(main())


def test_one_pipe_follows_the_event_loop_it_is_called_on(redis: str) -> None:
    """A test's app may run on several loops in turn: each gets a connection of its own."""
    pipe = pipe_to(redis)

    async def client_id() -> int:
        [answer] = await pipe.execute(pack(b"CLIENT", b"ID"), 1)
        return int(answer)

    first_loop, second_loop = asyncio.new_event_loop(), asyncio.new_event_loop()
    first = first_loop.run_until_complete(client_id())
    first_connection = pipe._connection
    assert first_loop.run_until_complete(client_id()) == first  # the same loop, the same one
    second = second_loop.run_until_complete(client_id())
    assert second != first
    pipe.close()
    second_loop.run_until_complete(asyncio.sleep(0.01))
    assert first_connection is not None
    first_connection.fail(redis_lib.ConnectionError("test over"))  # on its own loop, closed there
    first_loop.run_until_complete(asyncio.sleep(0.01))
    first_loop.close()
    second_loop.close()


def test_closing_after_the_loop_that_used_it_is_gone(redis: str) -> None:
    """A test client runs each request on a loop of its own, closed after it; the app's
    shutdown then closes the pipe from another loop."""
    pipe = pipe_to(redis)
    assert asyncio.run(pipe.execute(pack(b"PING"), 1)) == [b"PONG"]

    async def later() -> list[object]:
        pipe.close()
        return await pipe.execute(pack(b"PING"), 1)

    assert asyncio.run(later()) == [b"PONG"]


# --- callers that give up (a request's deadline) -------------------------------------------


def test_callers_that_give_up_leave_the_connection_in_step(tmp_path: Path) -> None:
    """Calls given up while Redis is stopped stay queued: when it answers again, their answers
    are dropped in their place and every later caller gets its own, on the same connection."""
    with own_redis(tmp_path) as server:
        client = server.client()
        client.mset({f"k{i}": f"v{i}" for i in range(60)})

        def get(*numbers: int) -> bytes:
            return b"".join(pack(b"GET", b"k%d" % i) for i in numbers)

        async def main() -> None:
            pipe = pipe_to(server.url)
            [before] = await pipe.execute(pack(b"CLIENT", b"ID"), 1)
            server.pause()

            async def give_up(i: int) -> None:
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(0.1):
                        await pipe.execute(get(i, i + 1), 2)

            await asyncio.gather(*(give_up(i) for i in range(0, 20, 2)))
            patient = [asyncio.ensure_future(pipe.execute(get(i), 1)) for i in range(20, 40)]
            await asyncio.sleep(0.3)
            assert not any(call.done() for call in patient)
            server.resume()
            assert await asyncio.gather(*patient) == [[b"v%d" % i] for i in range(20, 40)]
            for i in range(40, 58, 3):
                assert await pipe.execute(get(i, i + 1, i + 2), 3) == [
                    b"v%d" % i,
                    b"v%d" % (i + 1),
                    b"v%d" % (i + 2),
                ]
            [after] = await pipe.execute(pack(b"CLIENT", b"ID"), 1)
            assert after == before  # the same connection, never out of step
            pipe.close()

        asyncio.run(main())
        client.close()


def test_a_caller_giving_up_does_not_cancel_the_connection_others_wait_for(
    tmp_path: Path,
) -> None:
    with own_redis(tmp_path) as server:
        server.pause()  # the kernel accepts the connection; SELECT waits for an answer

        async def main() -> None:
            pipe = pipe_to(server.url.rsplit("/", 1)[0] + "/3")
            impatient = asyncio.ensure_future(asyncio.wait_for(pipe.execute(pack(b"PING"), 1), 0.1))
            patient = asyncio.ensure_future(pipe.execute(pack(b"PING"), 1))
            with pytest.raises(TimeoutError):
                await impatient
            await asyncio.sleep(0.2)
            server.resume()
            assert await patient == [b"PONG"]
            pipe.close()

        asyncio.run(main())


def test_a_call_nobody_waits_for_still_times_the_connection_out() -> None:
    async def main() -> None:
        async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while await reader.read(65_536):
                pass
            writer.close()

        server = await asyncio.start_server(swallow, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        pipe = pipe_to(f"redis://127.0.0.1:{port}/0", Profile("test", 0.3, 5.0))
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await pipe.execute(pack(b"PING"), 1)
        connection = pipe._connection
        assert connection is not None and connection.failed is None
        await asyncio.sleep(0.5)
        assert isinstance(connection.failed, redis_lib.TimeoutError)  # and closed: not reused
        pipe.close()
        server.close()
        await server.wait_closed()

    asyncio.run(main())
