"""Alert episodes and where their events go.

An episode opens when a column's window is in `alert` and none is open for it (model, version,
role, kind, column): one `alert` event. While it stays in alert nothing more is sent. The first
window back under the thresholds (`ok` or `warn`) closes it with a `resolved` event. An
`insufficient` window changes nothing: too few rows say neither that drift went on nor that it
stopped. Open episodes live in Redis (`featurestore.drift.state.alerts_key`), written in the
same atomic call that closes the windows, so a restarted monitor carries on the same episodes.

Events go to the alerts topic, and when configured as a POST of the event's JSON to
`monitor.webhook_url` and to `monitor.command` (the retraining hook, e.g. a script running
`fstore dataset create`, `fstore train` and a gated promotion) with the JSON on its stdin.
The command runs in the background: a retraining takes minutes and the windows go on closing.
Events are at least once: a monitor that dies after sending and before its commit sends them
again; the `episode` id tells a receiver it has seen one.
"""

from __future__ import annotations

import logging
import subprocess  # noqa: S404 - the retraining hook is a command the operator configures
import urllib.error
import urllib.request
from typing import Any

import orjson
import redis

from featurestore.config import MonitorSettings, url_without_password
from featurestore.drift.compare import ALERT, INSUFFICIENT
from featurestore.drift.state import alerts_key
from featurestore.redis_client import redis_errors
from streaming.consume import Outbox, Outgoing

__all__ = ["AlertSink", "Episodes"]

log = logging.getLogger("fstore.monitor")


class Episodes:
    """The open episodes per model, read from Redis on first use and kept in step with it."""

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self.client = client
        self.namespace = namespace
        self._open: dict[str, dict[str, dict[str, Any]]] = {}

    def open_episodes(self, model: str) -> dict[str, dict[str, Any]]:
        if model not in self._open:
            with redis_errors(self.client):
                raw = self.client.hgetall(alerts_key(self.namespace, model))
            self._open[model] = {
                (k.decode() if isinstance(k, bytes) else k): orjson.loads(v) for k, v in raw.items()
            }
        return self._open[model]

    def forget(self) -> None:
        """Drop what is cached (a commit failed): the next use reads Redis again."""
        self._open.clear()

    def step(
        self, model: str, field: str, record: dict[str, Any], ops: list[list[Any]]
    ) -> dict[str, Any] | None:
        """The event `record` (a closed window of one column) causes, if any; appends the
        Redis writes that keep the episode to `ops` and updates the cached state."""
        status = record["status"]
        episodes = self.open_episodes(model)
        current = episodes.get(field)
        key = alerts_key(self.namespace, model)
        if status == ALERT and current is None:
            event = _event("alert", record, since=record["window_start"])
            episodes[field] = event
            ops.append(["hset", key, field, orjson.dumps(event).decode()])
            return event
        if status not in (ALERT, INSUFFICIENT) and current is not None:
            del episodes[field]
            ops.append(["hdel", key, field])
            return _event("resolved", record, since=current["since"])
        return None


def _event(kind: str, record: dict[str, Any], since: str) -> dict[str, Any]:
    identity = {k: record[k] for k in ("model", "version", "role", "kind", "column")}
    episode = "|".join(str(v) for v in identity.values()) + f"|{since}"
    return {"event": kind, "episode": episode, **identity, "since": since, "window": record}


class AlertSink:
    """Sends alert events: Kafka always, the webhook and the command when configured."""

    def __init__(self, config: MonitorSettings, outbox: Outbox) -> None:
        self.config = config
        self.outbox = outbox
        self.failures = 0  # webhook calls and commands that failed
        self._running: list[subprocess.Popen[bytes]] = []

    def publish(self, events: list[dict[str, Any]]) -> None:
        """Send the events to the alerts topic; returns once Kafka has every one."""
        topic = self.config.alerts_topic
        self.outbox.send(
            [Outgoing(topic, orjson.dumps(e), e["episode"].encode()) for e in events],
            f"alert events for {topic}",
        )

    def notify(self, events: list[dict[str, Any]]) -> None:
        """Call the webhook and start the command for each event (after Kafka has them)."""
        self._reap()
        for event in events:
            body = orjson.dumps(event)
            if self.config.webhook_url:
                self._post(self.config.webhook_url, body)
            if self.config.command:
                self._start(self.config.command, body)

    def _post(self, url: str, body: bytes) -> None:
        request = urllib.request.Request(  # noqa: S310 - the URL is checked to be http(s)
            url, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(  # noqa: S310 - see above
                request, timeout=self.config.webhook_timeout_s
            ) as response:
                response.read()
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            self.failures += 1
            # Named without its secrets: a webhook URL often carries a token.
            log.warning("alert webhook %s failed: %s", url_without_password(url), exc)

    def _start(self, command: list[str], body: bytes) -> None:
        try:
            process = subprocess.Popen(command, stdin=subprocess.PIPE)  # noqa: S603 - configured
        except OSError as exc:
            self.failures += 1
            log.warning("alert command %s could not start: %s", command, exc)
            return
        try:
            if process.stdin is not None:
                process.stdin.write(body)
                process.stdin.close()
        except BrokenPipeError:
            log.debug("alert command %s did not read the event on its stdin", command)
        self._running.append(process)

    def _reap(self) -> None:
        for process in list(self._running):
            code = process.poll()
            if code is None:
                continue
            self._running.remove(process)
            if code != 0:
                self.failures += 1
                log.warning("alert command %s exited with %d", process.args, code)

    def close(self, timeout: float = 5.0) -> None:
        for process in self._running:
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.info("alert command %s still runs; leaving it", process.args)
        self._reap()
