"""What a demo run does and how big it is (the `fstore demo` options)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from demo.data import StreamConfig
from demo.errors import DemoError

__all__ = ["WARM_UP_HOURS", "DemoOptions"]

WARM_UP_HOURS = 24  # the longest window: labelled rows start once it is full


@dataclass(frozen=True)
class DemoOptions:
    data_dir: Path = Path("demo-data")
    repo: Path | None = None  # the feature repo; None: the shipped fraud template
    seed: int = 42
    users: int = 10_000
    merchants: int = 500
    hours: float = 30.0  # of history, the first 24 of which fill the 24 h windows
    requests: int = 3_000  # of the load test
    clients: int = 4  # concurrent connections of the load test
    window_s: int = 5  # the monitor's drift windows
    min_auc: float = 0.75
    host: str = "127.0.0.1"
    port: int = 0  # 0: a free port
    keep_running: bool = False

    def check(self) -> None:
        if self.hours <= WARM_UP_HOURS:
            raise DemoError(
                f"--hours {self.hours:g} leaves no labelled rows: the first {WARM_UP_HOURS} hours "
                "of history only fill the 24 h windows",
                f"pass --hours above {WARM_UP_HOURS}, e.g. 30",
            )
        for name, value, least in (
            ("--users", self.users, 100),
            ("--merchants", self.merchants, 20),
            ("--requests", self.requests, 100),
            ("--clients", self.clients, 1),
            ("--window-seconds", self.window_s, 2),
        ):
            if value < least:
                raise DemoError(f"{name} {value} is too small", f"pass {name} {least} or more")
        if not 0.5 <= self.min_auc < 1:
            raise DemoError(
                f"--min-auc {self.min_auc} is not in [0.5, 1)", "pass e.g. --min-auc 0.75"
            )

    @property
    def stream(self) -> StreamConfig:
        return StreamConfig(users=self.users, merchants=self.merchants, seed=self.seed)
