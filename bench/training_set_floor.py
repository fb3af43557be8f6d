"""The training-set benchmark's floor: one hand-written DuckDB statement that computes the same
features as `get_historical_features`, over the same offline log and label rows.

It is what DuckDB can do for this query when a person writes it for this one view: the bar
ours is held to (BENCHMARKS.md, "ours / floor").
"""

from __future__ import annotations

from pathlib import Path

from training_set_workload import TILE_US, WINDOWED, WINDOWS

__all__ = ["floor_sql", "literal"]


def literal(text: str | Path) -> str:
    """A quoted SQL string: every path goes through here."""
    return "'" + str(text).replace("'", "''") + "'"


def floor_sql(log_dir: Path, labels: Path, features: list[str]) -> str:
    """`features` in one query, by window functions over events and label rows together.

    Events and label rows of a user are sorted together by time; each label row's windows are
    RANGE frames reaching back to the far edge of docs/semantics.md, `(floor(t/T) - n + 1)·T`,
    i.e. `t mod T + (n-1)·T` before t, and up to t inclusive (peers). `last` is the newest event
    by (time, partition, offset): the last event row before the label row in that order, kept
    when it is inside the window. Each (partition, offset) counts once.
    """
    frames, columns = [], []
    for window, tiles in WINDOWS.items():
        wanted = [f for f in WINDOWED if f.endswith(f"_{window}") and f in features]
        if not wanted:
            continue
        reach = f"ts % {TILE_US} + {(tiles - 1) * TILE_US}"
        frames.append(
            f"w{window} AS (PARTITION BY user_id ORDER BY ts "
            f"RANGE BETWEEN {reach} PRECEDING AND CURRENT ROW)"
        )
        columns += [
            {
                f"count_{window}": f"count(is_event) OVER w{window}",
                f"amount_sum_{window}": f"coalesce(sum(amount) OVER w{window}, 0.0)",
                f"amount_max_{window}": f"max(amount) OVER w{window}",
            }[name]
            + f" AS {name}"
            for name in wanted
        ]
    latest = [
        f"CASE WHEN last_ts >= (ts // {TILE_US} - {tiles - 1}) * {TILE_US} "
        f"THEN last_amount END AS amount_last_{window}"
        for window, tiles in WINDOWS.items()
        if f"amount_last_{window}" in features
    ]
    if latest:
        newest = (
            "OVER (PARTITION BY user_id ORDER BY ts, is_label, p, o "
            "ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)"
        )
        columns += [
            f"last_value(amount IGNORE NULLS) {newest} AS last_amount",
            f"last_value(CASE WHEN is_event = 1 THEN ts END IGNORE NULLS) {newest} AS last_ts",
        ]
    window_clause = f"WINDOW {', '.join(frames)}" if frames else ""
    selected = [f for f in WINDOWED if f in features] + latest
    return f"""
      WITH events AS (
        SELECT user_id, epoch_us(event_timestamp) AS ts, amount, _partition AS p, _offset AS o
        FROM read_parquet({literal(log_dir / "date=*" / "*.parquet")})
        QUALIFY row_number() OVER (PARTITION BY _partition, _offset) = 1
      ), labels AS (
        SELECT *, file_row_number AS row
        FROM read_parquet({literal(labels)}, file_row_number = true)
      ), together AS (
        SELECT user_id, ts, amount, p, o, NULL::BIGINT AS row, 1 AS is_event, 0 AS is_label
        FROM events
        UNION ALL
        SELECT user_id, epoch_us(event_timestamp), NULL, NULL, NULL, row, NULL, 1 FROM labels
      ), windowed AS (
        SELECT row, ts, {", ".join(columns)}
        FROM together
        {window_clause}
        QUALIFY row IS NOT NULL
      )
      SELECT l.user_id, l.event_timestamp, l.label, {", ".join(selected)}
      FROM labels l JOIN windowed w USING (row)
      ORDER BY row
    """  # noqa: S608 - names are constants, paths go through literal()
