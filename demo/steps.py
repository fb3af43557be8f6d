"""`fstore demo`, step by step: services, feature repo, event stream, ingestion, training,
serving, consistency, drift — then the summary. Each step says what failed and what to do.

The product runs as a user runs it: `fstore apply`, `fstore ingest`, `fstore serve` and
`fstore monitor` are processes of their own; the demo drives them through Kafka, HTTP and the
Python API (training sets and models), as a producer, a client and a data scientist would.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import redis
from confluent_kafka import KafkaException
from rich.console import Console

from demo.consistency import verify_views
from demo.data import Population, Transactions
from demo.drift import DriftScenario
from demo.errors import DemoError
from demo.ingest import wait_ingested
from demo.live import CATCH_UP_MINUTES, LiveStream, now_us
from demo.options import WARM_UP_HOURS, DemoOptions
from demo.processes import Processes
from demo.report import Results, print_summary, summary_json
from demo.services import Started, ensure_services
from demo.stepper import Steps, advance, progress_bar
from demo.topics import TopicReader, create_topics, end_offsets, publish
from demo.traffic import ScoringClient, load_test, wait_ready
from demo.training import (
    MODEL,
    SERVICE,
    entity_rows,
    train_and_promote,
    train_with_added_features,
)
from demo.workspace import Workspace
from featurestore.config import DriftThresholds, MonitorSettings, Settings, load_settings
from featurestore.errors import FeatureStoreError
from featurestore.scaffold import template_dir
from featurestore.services import free_port
from featurestore.store import FeatureStore
from featurestore.timestamps import from_us
from serving.cli import is_loopback

__all__ = ["DemoRun", "find_repo", "monitor_settings"]

_HOUR_US, _MINUTE_US = 3_600_000_000, 60_000_000
_READY_TIMEOUT_S = 120.0
_INGEST_TIMEOUT_S = 600.0
_STEPS = 8


def find_repo() -> Path:
    """The fraud feature repo, shipped inside the package (`fstore init --template fraud`
    writes a copy): the demo runs from any folder, from an installed wheel too."""
    return template_dir("fraud")


def monitor_settings(options: DemoOptions) -> MonitorSettings:
    """Windows of seconds rather than the default 5 minutes, so the demo sees drift at once.

    Such a window holds a few hundred distinct transactions, whose sampling noise alone reaches
    a Jensen-Shannon distance of ~0.1 (the default alert, made for windows of thousands): the
    demo alerts above 0.2, next to PSI's 0.25. Labels come as the normal window ends, so a
    horizon of one window joins them and the window's live metric is reported.
    """
    return MonitorSettings(
        window=f"{options.window_s}s",
        sliding_windows=12,
        allowed_lateness="1s",
        min_samples=200,
        min_labels=100,
        label_horizon=f"{options.window_s}s",
        thresholds=DriftThresholds(js_alert=0.2),
    )


class DemoRun:
    def __init__(self, options: DemoOptions, console: Console) -> None:
        self.options = options
        self.console = console
        self.steps = Steps(console, _STEPS)
        self.results = Results()
        self.started: Started = []
        self.workspace: Workspace | None = None
        self.processes: Processes | None = None
        self.population = Population(options.stream)
        self.rng = np.random.default_rng(options.seed + 1)
        self.labelled_from = 0  # training rows start here (µs), once the day windows are full

    def run(self) -> Results:
        """Every step, then the summary. What the run started is stopped however it ends;
        with --keep-running only once interrupted, and the services and data are kept."""
        try:
            settings = self._services()
            workspace, processes, store = self._repo(settings)
            history, live = self._stream(workspace, processes, store)
            self._ingest(workspace, processes, store)
            self._train(workspace, store, history)
            connect, normal = self._serve(workspace, processes, live)
            with self.steps.step(
                "Online = offline: fstore verify on every view",
                "a mismatch is a bug: report it with the demo folder's logs",
            ):
                self.results.verify = verify_views(workspace.settings, self.console)
            with self.steps.step(
                "Drift: amounts x3, and the monitor's alert",
                f"read the monitor's log {processes.log_file('monitor')}",
            ):
                scenario = DriftScenario(workspace, live, normal, connect, self.console)
                self.results.drift = scenario.run()
            print_summary(self.console, self.results)
            (workspace.root / "summary.json").write_bytes(summary_json(self.results))
            if self.options.keep_running:
                self._stay(workspace, processes)
        finally:
            self._clean_up()
        return self.results

    # -- steps ---------------------------------------------------------------------------------

    def _services(self) -> Settings:
        with self.steps.step(
            "Kafka and Redis",
            "the demo uses FSTORE_KAFKA_BOOTSTRAP / FSTORE_REDIS_URL (or featurestore.yaml) when "
            "they answer, else starts local servers, which need a JDK >= 17, Maven and "
            "redis-server: see `fstore services status` and the logs it lists",
        ):
            settings = load_settings()
            self.started = ensure_services(settings, self.console)
        return settings

    def _repo(self, settings: Settings) -> tuple[Workspace, Processes, FeatureStore]:
        options = self.options
        with self.steps.step(
            "Feature repo: fstore apply",
            "check the repo with `fstore apply PATH`; logs/apply.log in the demo folder has output",
        ):
            repo = options.repo or find_repo()
            self.console.print(f"Feature repo {repo}")
            port = options.port or free_port()
            workspace = self.workspace = Workspace.create(
                options.data_dir, settings, monitor_settings(options), port, options.host
            )
            processes = self.processes = Processes(workspace)
            topics = workspace.topics
            # One partition for what the monitor reads: its windows close once every partition
            # has moved on, and one client's requests then move it at once.
            create_topics(
                workspace.settings.kafka,
                {topics.transactions: 3}
                | dict.fromkeys(
                    [topics.labels, topics.predictions, topics.drift, topics.alerts], 1
                ),
            )
            processes.run("apply", ["apply", str(repo)], FRAUD_TOPIC=topics.transactions)
            store = FeatureStore(workspace.settings)
            for entry in store.registry.list_views():
                self.console.print(
                    f"{entry.name}@{entry.version}: {len(entry.view.feature_names())} features by "
                    f"{', '.join(entry.view.join_keys)}, windows of up to 24 h, from "
                    f"{entry.view.source.topic}"
                )
            refs = store.registry.get_service(SERVICE).refs()
            self.console.print(f"feature service {SERVICE}: {len(refs)} features")
            self.console.print(f"Demo folder {workspace.root} (config {workspace.config_file})")
        return workspace, processes, store

    def _stream(
        self, workspace: Workspace, processes: Processes, store: FeatureStore
    ) -> tuple[Transactions, LiveStream]:
        options = self.options
        with self.steps.step(
            "Card transactions with planted fraud bursts, then their labels",
            "check that the broker accepts writes (`fstore services status`, its log)",
        ):
            end = now_us()
            start = end - int(options.hours * _HOUR_US)
            # The last minutes come live, once the server runs (step 6): see demo.live.
            live_from = end - CATCH_UP_MINUTES * _MINUTE_US
            history = self.population.transactions(start, live_from, self.rng)
            self.labelled_from = start + WARM_UP_HOURS * _HOUR_US
            kafka, topics = workspace.settings.kafka, workspace.topics
            self.console.print(
                f"{len(history):,} transactions of {options.users:,} users at "
                f"{options.merchants:,} merchants over {options.hours:g} h "
                f"({int(history.fraud.sum()):,} in stolen-card bursts), seed {options.seed}"
            )
            began = time.monotonic()
            with progress_bar(self.console) as bar:
                task = bar.add_task(f"to {topics.transactions}", total=len(history))
                publish(kafka, topics.transactions, history.events(), advance(bar, task))
            self.results.publish_seconds = time.monotonic() - began
            with progress_bar(self.console) as bar:
                task = bar.add_task(f"labels to {topics.labels}", total=len(history))
                labels = history.labels(from_us(end).isoformat())
                publish(kafka, topics.labels, labels, advance(bar, task))
        self.results.events, self.results.fraud_events = len(history), int(history.fraud.sum())
        views = [(entry.name, entry.version) for entry in store.registry.list_views()]

        def alive() -> None:
            processes.check("ingest")

        return history, LiveStream(workspace, self.population, self.rng, views, alive, live_from)

    def _ingest(self, workspace: Workspace, processes: Processes, store: FeatureStore) -> None:
        with self.steps.step("Ingestion: fstore ingest", f"read {processes.log_file('ingest')}"):
            views = [(entry.name, entry.version) for entry in store.registry.list_views()]
            ends = end_offsets(workspace.settings.kafka, workspace.topics.transactions)
            processes.start("ingest", ["ingest", "--group", f"fstore-demo-{workspace.run}-ingest"])
            with progress_bar(self.console) as bar:
                task = bar.add_task("events applied by every view", total=sum(ends.values()))
                count, seconds = wait_ingested(
                    store.online,
                    views,
                    ends,
                    lambda: processes.check("ingest"),
                    _INGEST_TIMEOUT_S,
                    advance(bar, task),
                )
            self.results.ingested, self.results.ingest_seconds = count, seconds
            self.results.views = len(views)
            self.console.print(
                f"{count:,} events into Redis and Parquet in {seconds:.1f}s from the first "
                f"batch: {self.results.ingest_rate:,.0f} events/s for {len(views)} views"
            )

    def _train(self, workspace: Workspace, store: FeatureStore, history: Transactions) -> None:
        with self.steps.step(
            "Training set (point-in-time) and a LightGBM model",
            "give it more data (--users, --hours), and see the error above",
        ):
            reader = TopicReader(workspace.settings.kafka, workspace.topics.labels)
            try:
                labels = reader.read(len(history), timeout=120.0)
            finally:
                reader.close()
            rows = entity_rows(labels, self.labelled_from)
            self.console.print(
                f"{rows.num_rows:,} labelled transactions, read back from the labels topic; the "
                f"first {WARM_UP_HOURS} h only fill the day windows"
            )
            trained = train_and_promote(store, rows, self.options.min_auc, self.console)
            comparison = train_with_added_features(store, rows, trained.version, self.console)
        results = self.results
        results.comparison = comparison
        results.dataset, results.model = trained.dataset, trained.version.ref
        results.training_rows, results.training_fraud = trained.rows, trained.fraud
        results.metrics, results.validation_rows = trained.version.metrics, trained.validation_rows

    def _serve(
        self, workspace: Workspace, processes: Processes, live: LiveStream
    ) -> tuple[Callable[[], ScoringClient], Transactions]:
        options, serving = self.options, workspace.settings.serving
        with self.steps.step(
            "Serving: fstore serve and fstore monitor; scoring live transactions",
            f"read {processes.log_file('serve')} and {processes.log_file('monitor')}",
        ):
            argv = ["serve", "--host", serving.host, "--port", str(serving.port)]
            if not is_loopback(serving.host):
                # The demo's own registry holds no API key: reads are open, as asked (--host).
                argv.append("--insecure")
            processes.start("serve", argv)
            group = f"fstore-demo-{workspace.run}-monitor"
            processes.start("monitor", ["monitor", "--group", group])
            host = "127.0.0.1" if serving.host in ("0.0.0.0", "::") else serving.host  # noqa: S104
            self.results.base_url = base = f"http://{host}:{serving.port}"

            def connect() -> ScoringClient:
                return ScoringClient(host, serving.port, MODEL)

            with self.console.status(f"Waiting for the server at {base}"):
                wait_ready(connect, MODEL, lambda: processes.check("serve"), _READY_TIMEOUT_S)
            self.console.print(f"{base} serves {MODEL}; API docs at {base}/docs")
            probe = connect()
            self.results.dashboard = probe.get("/ui")[0] == 200
            probe.close()
            with self.console.status("Live transactions: publishing, then waiting for the worker"):
                normal = live.next_batch()
            rows = LiveStream.rows(normal, self.rng)
            with progress_bar(self.console) as bar:
                task = bar.add_task(
                    f"scoring {len(rows):,} live transactions", total=options.requests
                )
                load = load_test(
                    connect, rows, options.requests, options.clients, advance(bar, task)
                )
            self.results.load = load
            if len(load.errors) > options.requests // 100:
                raise DemoError(f"{len(load.errors)} requests failed, e.g. {load.errors[0]}")
            self.console.print(
                f"{load.requests:,} requests from {options.clients} clients in "
                f"{load.seconds:.1f}s: {load.per_second:,.0f} req/s, "
                f"latency p50 {load.percentile(50):.1f} ms, p99 {load.percentile(99):.1f} ms"
            )
        return connect, normal

    # -- the end -------------------------------------------------------------------------------

    def _stay(self, workspace: Workspace, processes: Processes) -> None:
        running = "\n".join(
            f"  fstore {name}: pid {pid}, log {log}" for name, pid, log in processes.describe()
        )
        self.console.print(
            f"\n[bold]Running[/] until Ctrl-C:\n{running}\n"
            f"Explore: FSTORE_CONFIG={workspace.config_file} fstore models list"
        )
        try:
            while True:
                processes.check_all()
                time.sleep(1.0)
        except KeyboardInterrupt:
            self.console.print("Stopping the server, worker and monitor.")

    def _clean_up(self) -> None:
        if self.processes is not None:
            self.processes.stop_all()
        if self.options.keep_running:
            if self.started:
                self.console.print(
                    "Kafka and Redis keep running: `fstore services down` stops them."
                )
            return
        if self.workspace is not None:
            try:
                self.workspace.remove_run_data()
            except (FeatureStoreError, KafkaException, redis.RedisError) as exc:
                self.console.print(f"[yellow]Could not remove the run's topics and keys: {exc}[/]")
        for server in self.started:
            server.stop()
        if self.started:
            self.console.print("Stopped the Kafka and Redis the demo started.")
