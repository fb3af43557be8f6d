"""Window kinds and the one formula of which events a window holds at a read time.

A window is written as a string in a view's definition (stored and fingerprinted as written,
so views registered before window kinds existed keep their version):

    "24h"                 sliding: the tiles reaching back 24 h from t's tile, events up to t
    "24h_offset_1h"       the same 24 h ending 1 h (whole tiles) before t's tile
    "1h_every_10m"        hopping: the newest complete 1 h window aligned to 10 min steps
    "1d_tumbling"         hopping with step == length
    "lifetime"            every event of the entity up to t

`Window(...)` builds the same strings: `Window("24h", offset="1h")`, `Window("1h", every="10m")`,
`Window.tumbling("1d")`, `Window.lifetime()`. The feature name ends with the string
(`amount_sum_24h_offset_1h`).

In the tiles of a view (size T), every kind is three whole numbers (`TileWindow`): a length of
n tiles (none for lifetime), a step of s tiles and a lag of d tiles. At read time t, in tile
u = floor(t/T), the window holds the events e with

    first <= floor(e/T) <= last,   last = floor(u/s)·s - d,   first = last - n + 1
    and e <= t                     (only binds when d = 0: last is t's own tile)

sliding is (n, 1, 0) and with an offset of k tiles (n, 1, k); hopping with a step of s tiles
is (n, s, 1), and with an offset of k tiles (n, s, 1 + k) — the window ends at the last step
boundary at or before t, so it is complete; a lifetime window has no first tile.
`window_range` is that formula; the online read plan, the offline SQL (`frame_sql`) and the
brute-force reference (tests/reference.py) all use it.

>>> window_range("1h_every_10m", 60_000_000, 125 * 60_000_000)  # t = 02:05: 01:00 .. 01:59
WindowRange(first=60, last=119, until_us=7199999999)
>>> str(Window("24h", offset="1h")), str(Window.tumbling("1d")), str(Window.lifetime())
('24h_offset_1h', '1d_tumbling', 'lifetime')
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from featurestore.durations import duration_us

__all__ = [
    "LIFETIME",
    "TileWindow",
    "Window",
    "WindowRange",
    "frame_sql",
    "parse_window",
    "tile_window",
    "window_range",
]

LIFETIME = "lifetime"
_UNIT = r"\d+(?:ms|s|m|h|d|w)"
_TEXT = re.compile(
    rf"^(?P<length>{_UNIT})"
    rf"(?:_every_(?P<every>{_UNIT})|_(?P<tumbling>tumbling))?"
    rf"(?:_offset_(?P<offset>{_UNIT}))?$"
)


@dataclass(frozen=True)
class Window:
    """A window as a definition writes it; `str()` is its stored form and name suffix.

    `every` is a hopping window's step (`every == length`: tumbling); `offset` moves the
    window's end back from the read time. Durations as in `duration_us`.
    """

    length: str  # a duration, or "lifetime"
    every: str | None = None
    offset: str | None = None

    @classmethod
    def tumbling(cls, length: str, offset: str | None = None) -> Window:
        return cls(length, every=length, offset=offset)

    @classmethod
    def lifetime(cls) -> Window:
        return cls(LIFETIME)

    @property
    def is_lifetime(self) -> bool:
        return self.length == LIFETIME

    def __str__(self) -> str:
        if self.is_lifetime:
            return LIFETIME
        text = self.length
        if self.every is not None:
            text += "_tumbling" if self.every == self.length else f"_every_{self.every}"
        if self.offset is not None:
            text += f"_offset_{self.offset}"
        return text


def parse_window(text: str | Window) -> Window:
    """A window's stored string back to a `Window`; a clear ValueError when it is none.

    >>> parse_window("1h_every_10m_offset_1h")
    Window(length='1h', every='10m', offset='1h')
    """
    if isinstance(text, Window):
        return _checked(text)
    if text == LIFETIME:
        return Window(LIFETIME)
    match = _TEXT.match(text)
    if match is None:
        if "_offset_-" in text:
            raise ValueError(f"window {text!r}: the offset is negative; use a duration > 0")
        if "_" not in text:
            duration_us(text)  # raises its own message: not a duration
        raise ValueError(
            f"{text!r} is not a window: write a duration ('10m'), '24h_offset_1h', "
            "'1h_every_10m', '1d_tumbling' or 'lifetime' (or Window(...))"
        )
    length = match["length"]
    every = length if match["tumbling"] else match["every"]
    return _checked(Window(length, every=every, offset=match["offset"]))


def _checked(window: Window) -> Window:
    if window.is_lifetime:
        if window.every is not None or window.offset is not None:
            raise ValueError("a lifetime window takes no step and no offset")
        return window
    for what, text in (("length", window.length), ("step", window.every)):
        if text is not None:
            try:
                duration_us(text)
            except ValueError as exc:
                raise ValueError(f"window {what}: {exc}") from None
    if window.offset is not None:
        if window.offset.startswith("-"):
            raise ValueError(f"window offset {window.offset!r} is negative; use a duration > 0")
        try:
            duration_us(window.offset)
        except ValueError as exc:
            raise ValueError(f"window offset: {exc} (leave it out for no offset)") from None
    if window.every is not None and duration_us(window.length) % duration_us(window.every):
        raise ValueError(
            f"window {window}: the step {window.every} does not divide the length "
            f"{window.length}; use a step that does (or every={window.length!r}: tumbling)"
        )
    return window


@dataclass(frozen=True, order=True)
class TileWindow:
    """A window in whole tiles of one view: length n (0: lifetime), step s, lag d."""

    length: int
    step: int
    lag: int

    @property
    def is_lifetime(self) -> bool:
        return self.length == 0

    @property
    def cuts_at_read_time(self) -> bool:
        """Whether the window ends at the read time itself (its last tile is t's, d = 0)."""
        return self.lag == 0

    def last_tile(self, tile: int) -> int:
        return (tile // self.step) * self.step - self.lag

    def reach_tiles(self) -> int:
        """How many tiles back from t's tile the window may start (+1): what must be kept."""
        return self.length + self.step - 1 + self.lag


@functools.lru_cache(maxsize=1024)
def tile_window(window: str, tile_us: int) -> TileWindow:
    """A window's (n, s, d) in tiles of `tile_us`; ValueError when it is not whole tiles."""
    spec = parse_window(window)
    if spec.is_lifetime:
        return TileWindow(0, 1, 0)

    def tiles(what: str, text: str) -> int:
        us = duration_us(text)
        if us % tile_us:
            raise ValueError(
                f"window {window}: the {what} {text} is not a whole number of tiles of "
                f"{tile_us // 1000} ms; use a multiple of the view's tile"
            )
        return us // tile_us

    n = tiles("length", spec.length)
    k = 0 if spec.offset is None else tiles("offset", spec.offset)
    if spec.every is None:
        return TileWindow(n, 1, k)
    return TileWindow(n, tiles("step", spec.every), 1 + k)


@dataclass(frozen=True)
class WindowRange:
    """The events a window holds at one read time: tiles first..last (first None: since the
    entity's first event), and event times up to `until_us` (t itself, or the last tile's end)."""

    first: int | None
    last: int
    until_us: int

    def contains(self, e_us: int, tile_us: int) -> bool:
        tile = e_us // tile_us
        return (
            (self.first is None or tile >= self.first)
            and tile <= self.last
            and (e_us <= self.until_us)
        )


def window_range(window: str | TileWindow, tile_us: int, t_us: int) -> WindowRange:
    """The one window formula (module docstring): what `window` holds at read time `t_us`."""
    spec = window if isinstance(window, TileWindow) else tile_window(window, tile_us)
    last = spec.last_tile(t_us // tile_us)
    first = None if spec.is_lifetime else last - spec.length + 1
    until = t_us if spec.cuts_at_read_time else (last + 1) * tile_us - 1
    return WindowRange(first, last, until)


def frame_sql(spec: TileWindow, ts: str, tile_us: int) -> str:
    """`window_range` as a DuckDB RANGE frame over rows ordered by the µs time `ts`.

    With m = t mod (s·T), the last tile ends (exclusive) at t - m - (d-1)·T, so the frame
    reaches back m + (n+d-1)·T and, when d > 0, stops m + (d-1)·T + 1 before t.
    """
    if spec.is_lifetime:
        return "RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW"
    step = spec.step * tile_us
    into_step = f"(({ts} % {step} + {step}) % {step})"
    far = f"{into_step} + {(spec.length + spec.lag - 1) * tile_us} PRECEDING"
    if spec.cuts_at_read_time:
        return f"RANGE BETWEEN {far} AND CURRENT ROW"
    return f"RANGE BETWEEN {far} AND {into_step} + {(spec.lag - 1) * tile_us + 1} PRECEDING"
