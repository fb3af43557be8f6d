"""The lateness rule (`late_events`) against the brute-force reference, cut into any batches."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from featurestore.positions import NO_POSITION, late_events
from tests.reference import Event, apply_lateness

LATENESS = 300


@given(
    times=st.lists(st.integers(0, 3_000), max_size=60),
    cuts=st.lists(st.integers(0, 60), max_size=5),
)
def test_late_events_match_the_reference_however_the_stream_is_cut(
    times: list[int], cuts: list[int]
) -> None:
    events = [Event(ts=t, partition=0, offset=i) for i, t in enumerate(times)]
    _applied, want = apply_lateness(events, LATENESS)

    late: list[int] = []
    watermark = NO_POSITION.watermark
    bounds = sorted({0, len(times), *(c for c in cuts if c <= len(times))})
    for start, end in zip(bounds, bounds[1:], strict=False):
        ts = np.array(times[start:end], dtype=np.int64)
        is_late, watermark = late_events(ts, watermark, LATENESS)
        late += (np.flatnonzero(is_late) + start).tolist()
    assert late == [e.offset for e in want]
    assert watermark == max(times, default=NO_POSITION.watermark)


def test_closed_windows_and_no_lateness() -> None:
    ts = np.array([50, 10, 49], dtype=np.int64)
    assert late_events(ts, 0, 100, closed_before=20)[0].tolist() == [False, True, False]
    assert late_events(ts, 10**6, None, closed_before=20)[0].tolist() == [False] * 3
    assert late_events(np.zeros(0, dtype=np.int64), 7, 100)[1] == 7
