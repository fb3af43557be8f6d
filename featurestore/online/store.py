"""The online store in Redis — one server, or a Redis Cluster: tile states merged by a Lua
script per shard, read in one round trip per node.

The key layout (hash tags, shards, the entity's escaped name) is `layout.py`'s. A bucket is
`BUCKET_TILES` tiles (plan.py), so a long window reads whole buckets in the middle and single
tiles only at its two edges. States are packed little-endian float64 vectors (see `tiles.py`).

Exactly-once effect, per shard: one script call (scripts.py) checks that each partition's
stored position of the shard is the one its rows start from, merges the shard's tile states,
and moves the shard's positions — atomically. A replayed batch, or a second worker racing on a
revoked partition, fails the check and changes nothing in that shard. The same call checks that
the shard's state is still the one the writer wrote to (epoch, positions not moved back): what
the writer does when it is not is its rule (featurestore/writer.py), as is how it keeps shards
that stand at different positions (a crash between two shards' scripts) exactly-once.

Reads group entities by shard (one fold script call per shard) and the calls by node: on one
Redis everything goes out in one write; on a cluster one pipelined write per node, all nodes
written before any is read, so a read costs one round trip whatever the nodes.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import hiredis
import numpy as np
import orjson
import redis
from redis.crc import key_slot

from featurestore.config import RedisSettings
from featurestore.errors import OnlineStoreError
from featurestore.online.base import (
    Merged,
    Newest,
    Pick,
    ShardWrite,
    StateLost,
    StateRead,
    StoredState,
    TileStore,
)
from featurestore.online.layout import POSITIONS, REBUILD, entity_part, shard_of, shard_tag, tag_of
from featurestore.online.plan import LIFETIME_BUCKET
from featurestore.online.scripts import (
    ANNOUNCE_SCRIPT,
    FOLD_ARGS,
    FOLD_SCRIPT,
    MERGE_SCRIPT,
    NEWEST_SCRIPT,
    PICK_SCRIPT,
    SKETCH_SUM_SCRIPT,
)
from featurestore.positions import NO_POSITION, Position, PositionConflict
from featurestore.redis_client import STORE, make_client, make_node_pipe, make_pipe, redis_errors
from featurestore.redis_pipe import RedisPipe, array_head, bulks, pack
from featurestore.tiles import F64, TileLayout

__all__ = ["OnlineStore"]

# Answers that say the cluster moved a slot (a failover, a resharding): the slot map is read
# again and the read sent once more.
_MOVED = ("MOVED", "ASK")


@dataclass(frozen=True)
class _Command:
    """One packed command of a read, with the key that routes it (its slot's node)."""

    key: str
    packed: bytes


class OnlineStore(TileStore):
    """Tile states of feature views in one Redis or a Redis Cluster (`redis.cluster`)."""

    def __init__(self, config: RedisSettings) -> None:
        self.config = config
        self.namespace = config.namespace
        self.shards = config.shard_count
        self.cluster = config.cluster
        self.client = make_client(config, STORE)
        self._pipe: RedisPipe | None = None  # the async reads' connection, opened on first use
        self._node_pipes: dict[str, RedisPipe] = {}  # on a cluster, one per node
        self._merge = self.client.register_script(MERGE_SCRIPT)
        self._announce = self.client.register_script(ANNOUNCE_SCRIPT)
        self._fold = self.client.register_script(FOLD_SCRIPT)
        self._sketch_sum = self.client.register_script(SKETCH_SUM_SCRIPT)
        self._pick = self.client.register_script(PICK_SCRIPT)
        self._newest = self.client.register_script(NEWEST_SCRIPT)

    def close(self) -> None:
        """Close the connections: the async reads' ones (call this on the event loop that used
        them) and the pooled ones (a later call opens new ones)."""
        if self._pipe is not None:
            self._pipe.close()
        for pipe in self._node_pipes.values():
            pipe.close()
        self._node_pipes.clear()
        self.client.close()

    def shard_prefix(self, view: str, version: int, shard: int) -> str:
        """The hash tag that starts every key of one shard of a view version."""
        return shard_tag(self.namespace, view, version, shard)

    def entity_prefix(self, view: str, version: int, entity: str) -> str:
        """The prefix of an entity's keys: its shard's tag and its escaped name."""
        shard = shard_of(entity, self.shards)
        return f"{self.shard_prefix(view, version, shard)}:{entity_part(entity)}"

    def rebuild_key(self, view: str, version: int, shard: int) -> str:
        """The rebuild marker of one shard (reads of its entities say `rebuilding` while set)."""
        return f"{self.shard_prefix(view, version, shard)}:{REBUILD}"

    def drop_lifetime(self, view: str, version: int) -> int:
        """Delete a view version's lifetime states and their HyperLogLogs — the only keys of
        it that never expire (layout.py) — for `fstore remove`; how many there were."""
        pattern = f"{self.namespace}:{{{view}:{version}:*}}:*:{LIFETIME_BUCKET}*"
        deleted = 0
        with redis_errors(self.config):
            keys = list(self.client.scan_iter(match=pattern, count=1000))
            for first in range(0, len(keys), 1000):
                pipe = self.client.pipeline(transaction=False)
                for key in keys[first : first + 1000]:
                    pipe.delete(key)  # one by one: a cluster's keys live in many slots
                deleted += sum(int(n) for n in pipe.execute())
        return deleted

    def positions(self, view: str, version: int) -> dict[int, Position]:
        if self.shards > 1:
            return self.state(view, version).positions
        with redis_errors(self.config):
            raw = self.client.hgetall(f"{self.shard_prefix(view, version, 0)}:{POSITIONS}")
        return _stored_state([raw], [None]).positions

    def state(self, view: str, version: int) -> StoredState:
        with redis_errors(self.config):
            # One transaction on one Redis (a single moment); on a cluster shards live on
            # several nodes, each shard's two keys read together by its node.
            pipe = self.client.pipeline(transaction=not self.cluster)
            for shard in range(self.shards):
                pipe.hgetall(f"{self.shard_prefix(view, version, shard)}:{POSITIONS}")
                pipe.get(self.rebuild_key(view, version, shard))
            answers = pipe.execute()
        return _stored_state(answers[0::2], answers[1::2])

    def announce(self, view: str, version: int, offsets: dict[int, int]) -> None:
        args = [str(x) for partition, offset in offsets.items() for x in (partition, offset)]
        with redis_errors(self.config):
            self._announce(keys=[f"{self.shard_prefix(view, version, 0)}:{POSITIONS}"], args=args)

    def set_rebuilding(self, view: str, version: int, reason: str | None) -> None:
        with redis_errors(self.config):
            pipe = self.client.pipeline(transaction=not self.cluster)
            for shard in range(self.shards):
                key = self.rebuild_key(view, version, shard)
                if reason is None:
                    pipe.delete(key)
                else:
                    pipe.set(key, reason)
            pipe.execute()

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
        shard: int = 0,
        sketches: Sequence[tuple[int, str, str, list[str | int]]] = (),
        picks: Sequence[Pick] = (),
        newest: Sequence[Newest] = (),
    ) -> Merged | PositionConflict | StateLost:
        """Merge `rows` (key index, field, state...) into one shard and move its partitions
        from -> to, atomically. `keys` are "<entity part>:<bucket>" (layout.py), all of the
        shard. `distinct` and `sketches` add to the tiles' HyperLogLogs and percentile
        sketches in the same step.

        Returns the shard's epoch marker once merged (a new one when none was stored). Changes
        nothing and returns a `PositionConflict` when a stored position is ahead of the expected
        one, or `StateLost` (with the shard's rebuild marker set) when the stored epoch is not
        `epoch` (given: the one the writer holds) or a stored position is behind the expected
        one.
        """
        write = ShardWrite(
            shard, keys, ttls_ms, rows, moves, distinct, epoch, sketches, picks, newest
        )
        return self.merge_shards(view, version, layout, [write])[0]

    def merge_shards(
        self, view: str, version: int, layout: TileLayout, writes: Sequence[ShardWrite]
    ) -> list[Merged | PositionConflict | StateLost]:
        """`merge_batch` of several shards, pipelined (one round trip per node); each shard's
        script is atomic on its own, and each answers for its shard.

        The calls are packed here, as the reads are: a call declares every bucket hash it
        writes, and redis-py's packing of thousands of keys cost the writer more per event than
        the rest of its call. A call refused with NOSCRIPT (a restarted, flushed or promoted
        node) is sent again once the script is loaded; one whose slot moved, once the slot map
        is read again. Sending a merged call again changes nothing: its positions no longer
        match, and it answers a conflict."""
        commands = [self._merge_command(view, version, layout, w) for w in writes]
        with redis_errors(self.config):
            results = self._send(commands, errors_as_answers=True)
            redo = [i for i, r in enumerate(results) if _must_resend(r)]
            if redo:
                if any(isinstance(results[i], redis.exceptions.NoScriptError) for i in redo):
                    self.client.script_load(MERGE_SCRIPT)
                if self.cluster:
                    self._refresh_slots()
                again = self._send([commands[i] for i in redo], errors_as_answers=True)
                for i, answer in zip(redo, again, strict=True):
                    results[i] = answer
            for r in results:
                if isinstance(r, Exception):
                    raise r
        return [_merged(r, w) for r, w in zip(results, writes, strict=True)]

    def _merge_command(
        self, view: str, version: int, layout: TileLayout, write: ShardWrite
    ) -> _Command:
        keys, args = self._merge_call(view, version, layout, write)
        encoded = [k.encode() for k in keys]
        packed = pack(
            b"EVALSHA",
            self._merge.sha.encode(),
            b"%d" % len(encoded),
            *encoded,
            *(a.encode() if isinstance(a, str) else a for a in args),
        )
        return _Command(keys[0], packed)

    def _merge_call(
        self, view: str, version: int, layout: TileLayout, write: ShardWrite
    ) -> tuple[list[str], list[Any]]:
        prefix = self.shard_prefix(view, version, write.shard)
        # As strings: Lua numbers are doubles and would print a watermark as 1.77e+15.
        positions = [
            [str(p), str(old.offset), str(new.offset), str(new.watermark)]
            for p, (old, new) in write.moves.items()
        ]
        keys = [f"{prefix}:{POSITIONS}", f"{prefix}:{REBUILD}"]
        keys += [f"{prefix}:{k}" for k in write.keys]
        args = [
            layout.merge_codes(),
            orjson.dumps(positions),
            b"",
            orjson.dumps(list(write.ttls_ms)),
            np.ascontiguousarray(write.rows, dtype="<f8").tobytes(),
            orjson.dumps(list(write.distinct)),
            write.epoch or "",
            uuid.uuid4().hex,
        ]
        # Optional trailing arguments: percentile sketches, string picks, last_n lists.
        extra = [list(write.sketches), list(write.picks), list(write.newest)]
        while extra and not extra[-1]:
            extra.pop()
        args += [orjson.dumps(part) for part in extra]
        return keys, args

    def read_newest(self, windows: Sequence[tuple[int, Sequence[str]]]) -> list[list[str]]:
        """Per (n, one entity's window's `last_n` keys), the n newest values as text, newest
        first, by a script per window, pipelined; a second round trip like `read_sketches`."""
        calls: list[tuple[list[str], list[Any]]] = [
            (list(keys), [str(n)]) for n, keys in windows if keys
        ]
        found = iter(self._run_all(self._newest.sha, NEWEST_SCRIPT, calls))
        return [[_text(v) for v in next(found)] if keys else [] for _n, keys in windows]

    async def read_newest_async(
        self, windows: Sequence[tuple[int, Sequence[str]]]
    ) -> list[list[str]]:
        """`read_newest` in a worker thread (its pooled connections are blocking ones)."""
        return await asyncio.to_thread(self.read_newest, windows)

    def read_picks(self, windows: Sequence[tuple[str, Sequence[str]]]) -> list[str | None]:
        """Per (function, one entity's window's keys of a string `first` / `last`), the winning
        value, by a script per window, pipelined; a second round trip like `read_sketches`."""
        calls: list[tuple[list[str], list[Any]]] = [
            (list(keys), [function]) for function, keys in windows if keys
        ]
        answers = self._run_all(self._pick.sha, PICK_SCRIPT, calls)
        found = iter(answers)
        return [
            (None if (answer := next(found)) is None else _text(answer)) if keys else None
            for _function, keys in windows
        ]

    async def read_picks_async(
        self, windows: Sequence[tuple[str, Sequence[str]]]
    ) -> list[str | None]:
        """`read_picks` in a worker thread (its pooled connections are blocking ones)."""
        return await asyncio.to_thread(self.read_picks, windows)

    def _run_all(
        self, sha: str, script: str, calls: list[tuple[list[str], list[Any]]]
    ) -> list[Any]:
        """EVALSHA of one script per call, pipelined, loading it where a server lacks it."""
        if not calls:
            return []
        with redis_errors(self.config):
            answers = self._evalsha_all(sha, calls)
            if any(isinstance(a, redis.exceptions.NoScriptError) for a in answers):
                self.client.script_load(script)  # a restarted or flushed server
                answers = self._evalsha_all(sha, calls)
            for answer in answers:
                if isinstance(answer, Exception):
                    raise answer
        return answers

    def _evalsha_all(self, sha: str, calls: list[tuple[list[str], list[Any]]]) -> list[Any]:
        pipe = self.client.pipeline(transaction=False)
        for keys, args in calls:
            pipe.evalsha(sha, len(keys), *keys, *args)
        return list(pipe.execute(raise_on_error=False))

    def read_sketches(self, windows: Sequence[Sequence[str]]) -> list[dict[int, int]]:
        """Per list of one entity's window's percentile sketch keys (one slot), their bucket
        counts summed by a script, pipelined (one round trip per node). A second round trip
        after `read`'s, taken only by views with percentiles; a batch merged between the two
        can show in one and not the other, as between two reads."""
        return [{int(k): n for k, n in counts.items()} for counts in self.read_counts(windows)]

    def read_counts(self, windows: Sequence[Sequence[str]]) -> list[dict[str, int]]:
        """Per list of one entity's window's count hashes (percentile sketches, `top_k` value
        counts; one slot), their counts summed by a script, pipelined."""
        calls: list[tuple[list[str], list[Any]]] = [(list(keys), []) for keys in windows if keys]
        answers = self._run_all(self._sketch_sum.sha, SKETCH_SUM_SCRIPT, calls)
        found = iter(answers)
        out: list[dict[str, int]] = []
        for keys in windows:
            flat = next(found) if keys else []
            out.append({_text(flat[i]): int(flat[i + 1]) for i in range(0, len(flat), 2)})
        return out

    async def read_counts_async(self, windows: Sequence[Sequence[str]]) -> list[dict[str, int]]:
        """`read_counts` in a worker thread (its pooled connections are blocking ones)."""
        return await asyncio.to_thread(self.read_counts, windows)

    async def read_sketches_async(self, windows: Sequence[Sequence[str]]) -> list[dict[int, int]]:
        """`read_sketches` in a worker thread (its pooled connections are blocking ones)."""
        return await asyncio.to_thread(self.read_sketches, windows)

    def read(
        self,
        reads: Sequence[StateRead],
        distinct: Sequence[Sequence[str]] = (),
        rebuilding: Sequence[Sequence[str]] = (),
    ) -> tuple[list[F64], list[int], list[bool]]:
        """Merged window states, distinct counts and rebuild markers, in one round trip (per
        node, on a cluster).

        Each read is (the cache keys of its entities, the plan they share, the layout). Returns
        per read an array (entities, windows, width) — a window without any state is a row of
        NaN —, a PFCOUNT per key list of `distinct`, and per list of rebuild markers of
        `rebuilding` whether any is set.
        """
        commands, groups = self._read_commands(reads, distinct, rebuilding)
        with redis_errors(self.config):
            try:
                answers = self._send(commands)
            except redis.exceptions.NoScriptError:
                self.client.script_load(FOLD_SCRIPT)  # a restarted, flushed or promoted server
                answers = self._send(commands)
        return self._read_answers(reads, groups, answers, len(distinct), rebuilding)

    async def read_async(
        self,
        reads: Sequence[StateRead],
        distinct: Sequence[Sequence[str]] = (),
        rebuilding: Sequence[Sequence[str]] = (),
    ) -> tuple[list[F64], list[int], list[bool]]:
        """`read` on the running event loop, which goes on with other work while Redis answers:
        the commands go to one pipelined connection per node (redis_pipe.py) shared by
        concurrent reads."""
        commands, groups = self._read_commands(reads, distinct, rebuilding)
        if not commands:
            return self._read_answers(reads, groups, [], len(distinct), rebuilding)
        with redis_errors(self.config):
            answers = await self._send_async(commands)
            if any(_no_script(answer) for answer in answers):  # a restarted or flushed server
                await asyncio.to_thread(self.client.script_load, FOLD_SCRIPT)
                answers = await self._send_async(commands)
            if any(_moved(answer) for answer in answers):  # a failover moved slots
                await asyncio.to_thread(self._refresh_slots)
                answers = await self._send_async(commands)
            for answer in answers:
                if isinstance(answer, hiredis.ReplyError):  # classified by redis_errors
                    raise redis.ResponseError(str(answer))
        return self._read_answers(reads, groups, answers, len(distinct), rebuilding)

    def _read_commands(
        self,
        reads: Sequence[StateRead],
        distinct: Sequence[Sequence[str]],
        rebuilding: Sequence[Sequence[str]],
    ) -> tuple[list[_Command], list[list[list[int]]]]:
        """A read's commands, packed here rather than by redis-py's `evalsha` or pipeline: a
        read's script arguments are the same for every read of the tile and come packed with
        the plan, and redis-py's per-command machinery cost as much as the round trip itself
        (~50 µs of ~100). EVALSHA, not redis-py's Script: that would ask SCRIPT EXISTS first, a
        second round trip. One fold call per shard a read touches (a script's keys share one
        slot); `groups` says, per read, which of its entities each call folds."""
        sha = self._fold.sha.encode()
        commands: list[_Command] = []
        groups: list[list[list[int]]] = []
        for keys, plan, _layout in reads:
            by_tag: dict[str, list[int]] = {}
            if self.shards == 1:
                by_tag = {"": list(range(len(keys)))} if keys else {}
            else:
                for i, key in enumerate(keys):
                    by_tag.setdefault(tag_of(key), []).append(i)
            groups.append(list(by_tag.values()))
            for members in by_tag.values():
                encoded = [keys[i].encode() for i in members]
                packed = (
                    array_head(3 + len(encoded) + FOLD_ARGS)
                    + bulks((b"EVALSHA", sha, b"%d" % len(encoded), *encoded))
                    + plan.script_args
                )
                commands.append(_Command(keys[members[0]], packed))
        commands += [
            _Command(keys[0], pack(b"PFCOUNT", *(k.encode() for k in keys))) for keys in distinct
        ]
        commands += [
            _Command(key, pack(b"EXISTS", key.encode()))
            for markers in rebuilding
            for key in markers
        ]
        return commands, groups

    def _read_answers(
        self,
        reads: Sequence[StateRead],
        groups: list[list[list[int]]],
        answers: list[Any],
        distinct: int,
        rebuilding: Sequence[Sequence[str]],
    ) -> tuple[list[F64], list[int], list[bool]]:
        remaining = iter(answers)
        states = []
        for (keys, plan, layout), members in zip(reads, groups, strict=True):
            shape = (len(keys), len(plan.order), layout.width)
            out = np.empty(shape)
            for group in members:
                blob = next(remaining)
                flat = np.frombuffer(blob, dtype="<f8")
                size = len(group) * shape[1] * shape[2]
                if flat.size * 8 != len(blob) or flat.size != size:
                    raise OnlineStoreError(
                        f"Redis at {self.config.shown_url} holds tile states of another width "
                        f"than {layout.width} floats for {keys[group[0]][:-2]!r}: was the view "
                        "changed without a new version?"
                    )
                if len(group) == len(keys):  # one shard: in order already
                    out = flat.reshape(shape)
                else:
                    out[group] = flat.reshape((len(group), *shape[1:]))
            states.append(out)
        rest = [int(n) for n in remaining]
        counts, markers = rest[:distinct], iter(rest[distinct:])
        flags = [any([next(markers) > 0 for _ in keys]) for keys in rebuilding]
        return states, counts, flags

    def _send(self, commands: list[_Command], errors_as_answers: bool = False) -> list[Any]:
        """Commands written at once to one pooled connection per node, and their answers, in
        order. On a cluster whose slots moved (MOVED/ASK: a failover), the slot map is read
        again and the commands sent once more. `errors_as_answers`: an error answer (NOSCRIPT,
        MOVED...) is returned in its command's place instead of raised."""
        if not commands:
            return []
        if not self.cluster:
            return _exchange(self.client, commands, errors_as_answers)
        try:
            return self._send_by_node(commands, errors_as_answers)
        except (redis.exceptions.MovedError, redis.exceptions.AskError, redis.ConnectionError):
            self._refresh_slots()
            return self._send_by_node(commands, errors_as_answers)

    def _by_node(self, commands: list[_Command]) -> dict[str, tuple[Any, list[int]]]:
        cluster: Any = self.client
        nodes: dict[str, tuple[Any, list[int]]] = {}
        for i, command in enumerate(commands):
            node = cluster.nodes_manager.get_node_from_slot(key_slot(command.key.encode()))
            nodes.setdefault(node.name, (node, []))[1].append(i)
        return nodes

    def _send_by_node(self, commands: list[_Command], errors_as_answers: bool) -> list[Any]:
        answers: list[Any] = [None] * len(commands)
        opened = []
        try:
            for node, members in self._by_node(commands).values():
                if node.redis_connection is None:
                    raise redis.ConnectionError(f"no connection to cluster node {node.name}")
                pool = node.redis_connection.connection_pool
                connection = pool.get_connection()
                opened.append((pool, connection, members))
                connection.send_packed_command([b"".join(commands[i].packed for i in members)])
            for _pool, connection, members in opened:
                for i in members:
                    answers[i] = _answer(connection, errors_as_answers)
        except BaseException:
            # Answers may be left unread: those connections are out of step with their server.
            for _pool, connection, _members in opened:
                connection.disconnect()
            raise
        finally:
            for pool, connection, _members in opened:
                pool.release(connection)
        return answers

    async def _send_async(self, commands: list[_Command]) -> list[Any]:
        if not self.cluster:
            if self._pipe is None:
                self._pipe = make_pipe(self.config, STORE)
            return await self._pipe.execute(b"".join(c.packed for c in commands), len(commands))
        nodes = list(self._by_node(commands).values())
        replies = await asyncio.gather(
            *(
                self._node_pipe(node).execute(
                    b"".join(commands[i].packed for i in members), len(members)
                )
                for node, members in nodes
            )
        )
        answers: list[Any] = [None] * len(commands)
        for (_node, members), got in zip(nodes, replies, strict=True):
            for i, answer in zip(members, got, strict=True):
                answers[i] = answer
        return answers

    def _node_pipe(self, node: Any) -> RedisPipe:
        pipe = self._node_pipes.get(node.name)
        if pipe is None:
            pipe = make_node_pipe(self.config, node.host, node.port, STORE)
            self._node_pipes[node.name] = pipe
        return pipe

    def _refresh_slots(self) -> None:
        cluster: Any = self.client
        cluster.nodes_manager.initialize()


def _exchange(client: redis.Redis, commands: list[_Command], errors_as_answers: bool) -> list[Any]:
    """Commands written to one pooled connection at once, and their answers."""
    pool = client.connection_pool
    connection = pool.get_connection()
    try:
        connection.send_packed_command([b"".join(c.packed for c in commands)])  # type: ignore[no-untyped-call]
        return [_answer(connection, errors_as_answers) for _ in commands]
    except BaseException:
        # Answers may be left unread (an error answer raises): the connection is out of
        # step with the server, so it is closed rather than given back as it is.
        connection.disconnect()  # type: ignore[no-untyped-call]
        raise
    finally:
        pool.release(connection)


def _answer(connection: Any, errors_as_answers: bool) -> Any:
    """The next answer on a connection; an error answer returned rather than raised when
    `errors_as_answers` (the connection stays in step: the error was a whole answer)."""
    if not errors_as_answers:
        return connection.read_response()
    try:
        return connection.read_response()
    except redis.exceptions.ResponseError as error:
        return error


def _must_resend(answer: Any) -> bool:
    """Whether a merge call was refused before it ran, to be sent again: its node lacks the
    script, or no longer serves its slot."""
    return isinstance(
        answer,
        redis.exceptions.NoScriptError | redis.exceptions.MovedError | redis.exceptions.AskError,
    )


def _merged(result: Any, write: ShardWrite) -> Merged | PositionConflict | StateLost:
    answer = int(result[0])
    if answer == 1:
        return Merged(_text(result[1]))
    if answer == 0:
        return PositionConflict(int(result[1]), int(result[2]))
    what, stored = _text(result[1]), _text(result[2])
    where = f" (shard {write.shard})" if write.shard else ""
    if what == "epoch":
        return StateLost(
            f"its epoch marker is {stored or 'gone'}, not {write.epoch} as this writer wrote "
            f"it{where}"
        )
    expected = write.moves[int(what)][0].offset
    return StateLost(
        f"partition {what} stands at offset {stored}, behind the {expected} this writer "
        f"merged{where}"
    )


def _stored_state(hashes: Sequence[dict[Any, Any]], markers: Sequence[Any]) -> StoredState:
    """The fields of each shard's positions hash (see layout.py), and the rebuild markers."""
    shards: list[dict[int, Position]] = []
    epochs: list[str | None] = []
    appending: dict[int, int] = {}
    for raw in hashes:
        positions: dict[int, Position] = {}
        epoch = None
        for name, value in raw.items():
            field, text = _text(name), _text(value)
            if field == "epoch":
                epoch = text
            elif field.startswith("a:"):
                appending[int(field[2:])] = max(int(text), appending.get(int(field[2:]), -1))
            else:
                offset, watermark = text.split(":")
                positions[int(field)] = Position(int(offset), int(watermark))
        shards.append(positions)
        epochs.append(epoch)
    # Where a consumer resumes: per partition the lowest shard position (a shard that holds
    # none stands before the first offset).
    partitions = {p for positions in shards for p in positions}
    lowest = {
        p: min((positions.get(p, NO_POSITION) for positions in shards), key=lambda x: x.offset)
        for p in partitions
    }
    marker = next((_text(m) for m in markers if m is not None), None)
    return StoredState(lowest, tuple(epochs), appending, marker, tuple(shards))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _no_script(answer: Any) -> bool:
    return isinstance(answer, hiredis.ReplyError) and str(answer).startswith("NOSCRIPT")


def _moved(answer: Any) -> bool:
    return isinstance(answer, hiredis.ReplyError) and str(answer).startswith(_MOVED)
