"""Delayed labels joined with the prediction log, and the live metrics they give.

A label is {"request_id", "label", "at"} (plus "entities" to pick one row of a batch request),
or {"entities", "label", "at"}: the entity's newest prediction at or before `at`. It joins the
predictions made within `monitor.label_horizon` before its time. Every served and shadow
version that scored the row gets the pair, so each version's live metric is its own.

Order: the monitor indexes each prediction by request id and entity (Redis, per horizon-long
bucket) and parks each label until the prediction stream's watermark passes the label's time;
only then is it joined, so its prediction is surely indexed whatever order the two topics are
read in. A pair counts toward the window of its prediction's time (as NannyML's chunks do),
reported once labels for all of that window's predictions may have come: when the watermark
passes the window's end plus the horizon. A label that comes later than that is counted late.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import orjson

from featurestore.models.evaluation import log_loss, rmse, roc_auc
from featurestore.models.versions import Objective
from streaming.monitor.records import Labels, Predictions
from streaming.monitor.state import MonitorState

__all__ = ["JoinResult", "index_appends", "join_labels", "live_metrics", "pending_labels"]

Pair = tuple[float, float]  # (score, label)


def index_appends(
    predictions: Predictions, rows: Sequence[int], horizon_us: int
) -> dict[tuple[int, str], str]:
    """The index lines of the predictions at `rows`, grouped per (bucket, field)."""
    out: dict[tuple[int, str], list[str]] = {}
    for i in rows:
        request, entity, score = predictions.requests[i]
        model, version, role = predictions.keys[predictions.series[i]]
        at = int(predictions.ts[i])
        bucket = at // horizon_us
        line = f"{entity}\t{model}\t{version}\t{role}\t{score!r}\t{at}\n"
        out.setdefault((bucket, f"r:{request}"), []).append(line)
        if entity:
            out.setdefault((bucket, f"e:{entity}"), []).append(f"{at}\t{request}\n")
    return {key: "".join(lines) for key, lines in out.items()}


def pending_labels(labels: Labels, rows: Sequence[int]) -> list[tuple[int, bytes]]:
    """(time, member) of the labels at `rows` for the waiting set; the partition and offset
    keep two equal labels apart."""
    out = []
    for i in rows:
        request, entity, label = labels.records[i]
        at = int(labels.ts[i])
        member = [request, entity, label, at, int(labels.partition[i]), int(labels.offset[i])]
        out.append((at, orjson.dumps(member)))
    return out


@dataclass
class JoinResult:
    pairs: dict[tuple[int, str], list[Pair]] = field(default_factory=dict)  # (window, series)
    matched: int = 0
    unmatched: int = 0  # no prediction within the horizon (or several rows, no entities)
    late: int = 0  # the prediction's window was reported already


def join_labels(
    state: MonitorState,
    labels: list[tuple[bytes, int]],
    horizon_us: int,
    window_us: int,
    performed: int | None,
) -> JoinResult:
    """Join waiting labels (member, time) with the indexed predictions."""
    parsed = [orjson.loads(member) for member, _ in labels]
    first: list[tuple[int, str]] = []
    for request, entity, _label, at, _p, _o in parsed:
        name = f"r:{request}" if request else f"e:{entity}"
        first += [(at // horizon_us, name), (at // horizon_us - 1, name)]
    found = state.index_lines(first)
    # Entity labels: the entity's newest prediction within the horizon, then its request.
    chosen: dict[int, tuple[str, int]] = {}
    for n, (request, _entity, _label, at, _p, _o) in enumerate(parsed):
        if request:
            continue
        best: tuple[int, str] | None = None
        for text in found[2 * n : 2 * n + 2]:
            for line in (text or b"").decode().splitlines():
                when, rid = line.split("\t", 1)
                if at - horizon_us <= int(when) <= at and (best is None or int(when) > best[0]):
                    best = (int(when), rid)
        if best is not None:
            chosen[n] = (best[1], best[0] // horizon_us)
    second = state.index_lines([(bucket, f"r:{rid}") for rid, bucket in chosen.values()])
    by_label = dict(zip(chosen, second, strict=True))
    result = JoinResult()
    for n, (request, entity, label, at, _p, _o) in enumerate(parsed):
        texts = found[2 * n : 2 * n + 2] if request else [by_label.get(n)]
        rows = [line.split("\t") for text in texts for line in (text or b"").decode().splitlines()]
        rows = [
            r for r in rows if at - horizon_us <= int(r[5]) <= at and (not entity or r[0] == entity)
        ]
        if not entity and len({r[0] for r in rows}) > 1:
            rows = []  # a batch request and a label that does not say which row it is for
        if not rows:
            result.unmatched += 1
            continue
        windows = {int(r[5]) // window_us * window_us for r in rows}
        if performed is not None and min(windows) < performed:
            result.late += 1
            continue
        result.matched += 1
        for entity_, model, version, role, score, when in rows:
            del entity_
            window = int(when) // window_us * window_us
            key = (window, f"{model}|{version}|{role}")
            result.pairs.setdefault(key, []).append((float(score), float(label)))
    return result


def pairs_text(pairs: list[Pair]) -> str:
    return "".join(f"{score!r} {label!r}\n" for score, label in pairs)


def parse_pairs(text: bytes) -> list[Pair]:
    values = np.array(text.split(), dtype=np.float64).reshape(-1, 2)
    return [(float(s), float(label)) for s, label in values]


def live_metrics(objective: Objective, pairs: list[Pair]) -> dict[str, float] | None:
    """AUC and log loss (binary) or RMSE (regression) of the pairs; None when they cannot be
    computed (binary labels of one class only, or labels that are not 0/1)."""
    scores = np.array([s for s, _ in pairs], dtype=np.float64)
    labels = np.array([label for _, label in pairs], dtype=np.float64)
    if objective is Objective.BINARY:
        if not np.isin(labels, (0.0, 1.0)).all() or np.unique(labels).size < 2:
            return None
        return {"auc": roc_auc(labels, scores), "logloss": log_loss(labels, scores)}
    return {"rmse": rmse(labels, scores)}
