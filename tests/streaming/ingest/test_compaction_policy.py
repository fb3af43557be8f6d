"""The worker merges the small offline-log files of finished dates now and then."""

from __future__ import annotations

import pyarrow as pa

from featurestore.config import Settings
from streaming.ingest.worker import Worker
from tests.featurestore.offline.test_log import log_rows
from tests.streaming.conftest import make_view


def _sorted(table: pa.Table) -> pa.Table:
    return table.sort_by([("_partition", "ascending"), ("_offset", "ascending")])


def test_the_worker_merges_the_small_log_files_of_past_dates(
    settings: Settings, topic: str
) -> None:
    view = make_view(topic)
    worker = Worker(settings, [(view, 1)], group=f"{topic}.g")
    offline = worker.offline
    for i in range(40):  # 40 batches, each spread over the same three past dates
        offline.append(view.name, 1, log_rows(6, start=6 * i, seed=i))
    files = offline.files(view.name, 1)
    assert len(files) >= 100
    before = offline.read_events(view.name, 1)

    worker._compact()  # not yet due: the first merge comes one interval after the start
    assert worker.counters.log_files_compacted == 0
    worker.compact_every_s = 0.0
    worker._compact()

    assert worker.counters.log_files_compacted == len(files)
    assert len({path.parent for path in offline.files(view.name, 1)}) == len(
        offline.files(view.name, 1)
    )  # one file per date
    assert _sorted(offline.read_events(view.name, 1)).equals(_sorted(before))
