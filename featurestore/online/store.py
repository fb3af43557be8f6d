"""The online store in one Redis: tile states merged by a Lua script, read in one round trip.

Layout, per view version and entity:
    {ns}:{view}:{version}:{entity}:{bucket}   hash; field "<i>" = state of tile i of the bucket,
                                                field "b"   = state of the whole bucket
    {ns}:{view}:{version}:{entity}:{bucket}:h:{column}:{field}
                                               HyperLogLog of a column's values in that tile
    {ns}:{view}:{version}:{entity}:c          string; "<tile>;" + the entity's folded windows at
                                               that tile (a read cache, dropped on every write)
    {ns}:{view}:{version}:_pos                 hash; field "<partition>" = "offset:watermark",
                                               "epoch" = the version's epoch marker (random, set
                                               with the first position), "a:<partition>" = the
                                               newest offset a writer announced it logs
    {ns}:{view}:{version}:_rebuild             string; set while the version's state is being
                                               rebuilt from the offline log (reads: `rebuilding`)
A bucket is `BUCKET_TILES` tiles (plan.py), so a long window reads whole buckets in the middle
and single tiles only at its two edges. States are packed little-endian float64 vectors (see
`tiles.py`).

Exactly-once effect: one script call per batch (scripts.py) checks that every partition's
stored position is the one the batch started from, merges all tile states, and moves the
positions — atomically. A replayed batch or a second worker racing on a revoked partition fails
the check and changes nothing. The same call checks that the state is still the one the writer
wrote to (epoch, positions not moved back): what the writer does when it is not is its rule
(featurestore/writer.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import hiredis
import numpy as np
import orjson
import redis

from featurestore.config import RedisSettings
from featurestore.errors import OnlineStoreError
from featurestore.online.base import Merged, StateLost, StateRead, StoredState, TileStore
from featurestore.online.scripts import ANNOUNCE_SCRIPT, FOLD_ARGS, FOLD_SCRIPT, MERGE_SCRIPT
from featurestore.positions import Position, PositionConflict
from featurestore.redis_client import STORE, make_client, make_pipe, redis_errors
from featurestore.redis_pipe import RedisPipe, array_head, bulks, pack
from featurestore.tiles import F64, TileLayout

__all__ = ["OnlineStore"]

_POSITIONS = "_pos"
_REBUILD = "_rebuild"


class OnlineStore(TileStore):
    """Tile states of feature views in one Redis (the `TileStore` of a single server)."""

    def __init__(self, config: RedisSettings) -> None:
        self.config = config
        self.namespace = config.namespace
        self.client = make_client(config, STORE)
        self._pipe: RedisPipe | None = None  # the async reads' connection, opened on first use
        self._merge = self.client.register_script(MERGE_SCRIPT)
        self._announce = self.client.register_script(ANNOUNCE_SCRIPT)
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
            raw = self.client.hgetall(f"{self.view_prefix(view, version)}:{_POSITIONS}")
        return _stored_state(raw, None).positions

    def state(self, view: str, version: int) -> StoredState:
        prefix = self.view_prefix(view, version)
        with redis_errors(self.config):
            pipe = self.client.pipeline(transaction=True)
            pipe.hgetall(f"{prefix}:{_POSITIONS}")
            pipe.get(f"{prefix}:{_REBUILD}")
            raw, marker = pipe.execute()
        return _stored_state(raw, marker)

    def announce(self, view: str, version: int, offsets: dict[int, int]) -> None:
        args = [str(x) for partition, offset in offsets.items() for x in (partition, offset)]
        with redis_errors(self.config):
            self._announce(keys=[f"{self.view_prefix(view, version)}:{_POSITIONS}"], args=args)

    def set_rebuilding(self, view: str, version: int, reason: str | None) -> None:
        key = f"{self.view_prefix(view, version)}:{_REBUILD}"
        with redis_errors(self.config):
            if reason is None:
                self.client.delete(key)
            else:
                self.client.set(key, reason)

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
        epoch: str | None = None,
    ) -> Merged | PositionConflict | StateLost:
        """Merge `rows` (key index, field, state...) and move partitions from -> to, atomically.

        Returns the version's epoch marker once merged (a new one when none was stored). Changes
        nothing and returns a `PositionConflict` when a stored position is ahead of the expected
        one, or `StateLost` (with the rebuild marker set) when the stored epoch is not `epoch`
        (given: the one the writer holds) or a stored position is behind the expected one.
        """
        prefix = self.view_prefix(view, version)
        # As strings: Lua numbers are doubles and would print a watermark as 1.77e+15.
        positions = [
            [str(p), str(old.offset), str(new.offset), str(new.watermark)]
            for p, (old, new) in moves.items()
        ]
        with redis_errors(self.config):
            result = self._merge(
                keys=[f"{prefix}:{_POSITIONS}", f"{prefix}:{_REBUILD}"],
                args=[
                    layout.merge_codes(),
                    orjson.dumps(positions),
                    orjson.dumps([f"{prefix}:{k}" for k in keys]),
                    orjson.dumps(list(ttls_ms)),
                    np.ascontiguousarray(rows, dtype="<f8").tobytes(),
                    orjson.dumps(list(distinct)),
                    epoch or "",
                    uuid.uuid4().hex,
                ],
            )
        answer = int(result[0])
        if answer == 1:
            return Merged(_text(result[1]))
        if answer == 0:
            return PositionConflict(int(result[1]), int(result[2]))
        what, stored = _text(result[1]), _text(result[2])
        if what == "epoch":
            return StateLost(
                f"its epoch marker is {stored or 'gone'}, not {epoch} as this writer wrote it"
            )
        expected = moves[int(what)][0].offset
        return StateLost(
            f"partition {what} stands at offset {stored}, behind the {expected} this writer merged"
        )

    def read(
        self,
        reads: Sequence[StateRead],
        distinct: Sequence[Sequence[str]] = (),
        rebuilding: Sequence[str] = (),
    ) -> tuple[list[F64], list[int], list[bool]]:
        """Merged window states, distinct counts and rebuild markers, all in one round trip.

        Each read is (the cache keys of its entities, the plan they share, the layout). Returns
        per read an array (entities, windows, width) — a window without any state is a row of
        NaN —, a PFCOUNT per key list of `distinct`, and per view prefix of `rebuilding`
        whether its state is being rebuilt.
        """
        commands = self._read_commands(reads, distinct, rebuilding)
        with redis_errors(self.config):
            try:
                answers = self._send(commands)
            except redis.exceptions.NoScriptError:
                self.client.script_load(FOLD_SCRIPT)  # a restarted or flushed server
                answers = self._send(commands)
        return self._read_answers(reads, answers, len(distinct))

    async def read_async(
        self,
        reads: Sequence[StateRead],
        distinct: Sequence[Sequence[str]] = (),
        rebuilding: Sequence[str] = (),
    ) -> tuple[list[F64], list[int], list[bool]]:
        """`read` on the running event loop, which goes on with other work while Redis answers:
        the commands go to one pipelined connection (redis_pipe.py) shared by concurrent reads."""
        commands = self._read_commands(reads, distinct, rebuilding)
        if not commands:
            return self._read_answers(reads, [], len(distinct))
        if self._pipe is None:
            self._pipe = make_pipe(self.config, STORE)
        packed = b"".join(commands)
        with redis_errors(self.config):
            answers = await self._pipe.execute(packed, len(commands))
            if any(_no_script(answer) for answer in answers):  # a restarted or flushed server
                await self._pipe.execute(pack(b"SCRIPT", b"LOAD", FOLD_SCRIPT.encode()), 1)
                answers = await self._pipe.execute(packed, len(commands))
            for answer in answers:
                if isinstance(answer, hiredis.ReplyError):  # classified by redis_errors
                    raise redis.ResponseError(str(answer))
        return self._read_answers(reads, answers, len(distinct))

    def _read_commands(
        self,
        reads: Sequence[StateRead],
        distinct: Sequence[Sequence[str]],
        rebuilding: Sequence[str],
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
        commands += [pack(b"EXISTS", f"{prefix}:{_REBUILD}".encode()) for prefix in rebuilding]
        return commands

    def _read_answers(
        self, reads: Sequence[StateRead], answers: list[Any], distinct: int
    ) -> tuple[list[F64], list[int], list[bool]]:
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
        rest = [int(n) for n in remaining]
        return states, rest[:distinct], [n > 0 for n in rest[distinct:]]

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


def _stored_state(raw: dict[Any, Any], marker: Any) -> StoredState:
    """The fields of a positions hash (see the layout above), and the rebuild marker."""
    positions: dict[int, Position] = {}
    appending: dict[int, int] = {}
    epoch = None
    for name, value in raw.items():
        field, text = _text(name), _text(value)
        if field == "epoch":
            epoch = text
        elif field.startswith("a:"):
            appending[int(field[2:])] = int(text)
        else:
            offset, watermark = text.split(":")
            positions[int(field)] = Position(int(offset), int(watermark))
    return StoredState(positions, epoch, appending, None if marker is None else _text(marker))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _no_script(answer: Any) -> bool:
    return isinstance(answer, hiredis.ReplyError) and str(answer).startswith("NOSCRIPT")
