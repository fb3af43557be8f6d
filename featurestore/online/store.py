"""The online store in one Redis: tile states merged by a Lua script, read in one round trip.

Layout, per view version and entity:
    {ns}:{view}:{version}:{entity}:{bucket}   hash; field "<i>" = state of tile i of the bucket,
                                                field "b"   = state of the whole bucket
    {ns}:{view}:{version}:{entity}:{bucket}:h:{column}:{field}
                                               HyperLogLog of a column's values in that tile
    {ns}:{view}:{version}:{entity}:c          string; "<tile>;" + the entity's folded windows at
                                               that tile (a read cache, dropped on every write)
    {ns}:{view}:{version}:_pos                 hash; field "<partition>" = "offset:watermark"
A bucket is `BUCKET_TILES` tiles (plan.py), so a long window reads whole buckets in the middle
and single tiles only at its two edges. States are packed little-endian float64 vectors (see
`tiles.py`).

Exactly-once effect: one script call per batch (scripts.py) checks that every partition's
stored position is the one the batch started from, merges all tile states, and moves the
positions — atomically. A replayed batch or a second worker racing on a revoked partition fails
the check and changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import hiredis
import numpy as np
import orjson
import redis

from featurestore.config import RedisSettings
from featurestore.errors import OnlineStoreError
from featurestore.online.base import StateRead, TileStore
from featurestore.online.scripts import FOLD_ARGS, FOLD_SCRIPT, MERGE_SCRIPT
from featurestore.positions import Position, PositionConflict
from featurestore.redis_client import STORE, make_client, make_pipe, redis_errors
from featurestore.redis_pipe import RedisPipe, array_head, bulks, pack
from featurestore.tiles import F64, TileLayout

__all__ = ["OnlineStore"]


class OnlineStore(TileStore):
    """Tile states of feature views in one Redis (the `TileStore` of a single server)."""

    def __init__(self, config: RedisSettings) -> None:
        self.config = config
        self.namespace = config.namespace
        self.client = make_client(config, STORE)
        self._pipe: RedisPipe | None = None  # the async reads' connection, opened on first use
        self._merge = self.client.register_script(MERGE_SCRIPT)
        self._fold = self.client.register_script(FOLD_SCRIPT)

    def close(self) -> None:
        """Close the connections: the async reads' one (call this on the event loop that used
        it) and the pooled ones (a later call opens new ones)."""
        if self._pipe is not None:
            self._pipe.close()
        self.client.close()

    def view_prefix(self, view: str, version: int) -> str:
        return f"{self.namespace}:{view}:{version}"

    def positions(self, view: str, version: int) -> dict[int, Position]:
        with redis_errors(self.config):
            raw = self.client.hgetall(f"{self.view_prefix(view, version)}:_pos")
        out: dict[int, Position] = {}
        for partition, value in raw.items():
            text = value.decode() if isinstance(value, bytes) else value
            offset, watermark = text.split(":")
            out[int(partition)] = Position(int(offset), int(watermark))
        return out

    def merge_batch(
        self,
        view: str,
        version: int,
        layout: TileLayout,
        keys: Sequence[str],
        ttls_ms: Sequence[int],
        rows: F64,
        moves: dict[int, tuple[Position, Position]],
        distinct: Sequence[tuple[int, str, str, list[str]]] = (),
    ) -> PositionConflict | None:
        """Merge `rows` (key index, field, state...) and move partitions from -> to, atomically.

        Returns a `PositionConflict` (and changes nothing) when a stored position is not the
        expected one.
        """
        prefix = self.view_prefix(view, version)
        # As strings: Lua numbers are doubles and would print a watermark as 1.77e+15.
        positions = [
            [str(p), str(old.offset), str(new.offset), str(new.watermark)]
            for p, (old, new) in moves.items()
        ]
        with redis_errors(self.config):
            result = self._merge(
                keys=[f"{prefix}:_pos"],
                args=[
                    layout.merge_codes(),
                    orjson.dumps(positions),
                    orjson.dumps([f"{prefix}:{k}" for k in keys]),
                    orjson.dumps(list(ttls_ms)),
                    np.ascontiguousarray(rows, dtype="<f8").tobytes(),
                    orjson.dumps(list(distinct)),
                ],
            )
        if int(result[0]) == 1:
            return None
        return PositionConflict(int(result[1]), int(result[2]))

    def read(
        self,
        reads: Sequence[StateRead],
        distinct: Sequence[Sequence[str]] = (),
    ) -> tuple[list[F64], list[int]]:
        """Merged window states and distinct counts, all in one round trip.

        Each read is (the cache keys of its entities, the plan they share, the layout). Returns
        per read an array (entities, windows, width) — a window without any state is a row of
        NaN — and a PFCOUNT per key list of `distinct`.
        """
        commands = self._read_commands(reads, distinct)
        with redis_errors(self.config):
            try:
                answers = self._send(commands)
            except redis.exceptions.NoScriptError:
                self.client.script_load(FOLD_SCRIPT)  # a restarted or flushed server
                answers = self._send(commands)
        return self._read_answers(reads, answers)

    async def read_async(
        self,
        reads: Sequence[StateRead],
        distinct: Sequence[Sequence[str]] = (),
    ) -> tuple[list[F64], list[int]]:
        """`read` on the running event loop, which goes on with other work while Redis answers:
        the commands go to one pipelined connection (redis_pipe.py) shared by concurrent reads."""
        commands = self._read_commands(reads, distinct)
        if not commands:
            return self._read_answers(reads, [])
        if self._pipe is None:
            self._pipe = make_pipe(self.config, STORE)
        packed = b"".join(commands)
        with redis_errors(self.config):
            answers = await self._pipe.execute(packed, len(commands))
            if any(_no_script(answer) for answer in answers):  # a restarted or flushed server
                await self._pipe.execute(pack(b"SCRIPT", b"LOAD", FOLD_SCRIPT.encode()), 1)
                answers = await self._pipe.execute(packed, len(commands))
        for answer in answers:
            if isinstance(answer, hiredis.ReplyError):
                raise redis.ResponseError(str(answer))
        return self._read_answers(reads, answers)

    def _read_commands(
        self,
        reads: Sequence[StateRead],
        distinct: Sequence[Sequence[str]],
    ) -> list[bytes]:
        """A read's commands, packed here rather than by redis-py's `evalsha` or pipeline: a
        read's script arguments are the same for every read of the tile and come packed with
        the plan, and redis-py's per-command machinery cost as much as the round trip itself
        (~50 µs of ~100). EVALSHA, not redis-py's Script: that would ask SCRIPT EXISTS first, a
        second round trip."""
        sha = self._fold.sha.encode()
        commands = [
            array_head(3 + len(keys) + FOLD_ARGS)
            + bulks((b"EVALSHA", sha, b"%d" % len(keys), *(k.encode() for k in keys)))
            + plan.script_args
            for keys, plan, _layout in reads
            if keys
        ]
        commands += [pack(b"PFCOUNT", *(k.encode() for k in keys)) for keys in distinct]
        return commands

    def _read_answers(
        self, reads: Sequence[StateRead], answers: list[Any]
    ) -> tuple[list[F64], list[int]]:
        remaining = iter(answers)
        states = []
        for keys, plan, layout in reads:
            shape = (len(keys), len(plan.lengths), layout.width)
            if not keys:
                states.append(np.empty(shape))
                continue
            blob = next(remaining)
            flat = np.frombuffer(blob, dtype="<f8")
            if flat.size * 8 != len(blob) or flat.size != shape[0] * shape[1] * shape[2]:
                raise OnlineStoreError(
                    f"Redis at {self.config.shown_url} holds tile states of another width than "
                    f"{layout.width} floats for {keys[0][:-2]!r}: was the view changed without a "
                    "new version?"
                )
            states.append(flat.reshape(shape))
        return states, [int(n) for n in remaining]

    def _send(self, commands: list[bytes]) -> list[Any]:
        """The commands of a read, written to one pooled connection at once, and their answers."""
        if not commands:
            return []
        pool = self.client.connection_pool
        connection = pool.get_connection()
        try:
            connection.send_packed_command([b"".join(commands)])  # type: ignore[no-untyped-call]
            answers = [connection.read_response() for _ in commands]
        except BaseException:
            # Answers may be left unread (an error answer raises): the connection is out of
            # step with the server, so it is closed rather than given back as it is.
            connection.disconnect()  # type: ignore[no-untyped-call]
            raise
        finally:
            pool.release(connection)
        return answers


def _no_script(answer: Any) -> bool:
    return isinstance(answer, hiredis.ReplyError) and str(answer).startswith("NOSCRIPT")
