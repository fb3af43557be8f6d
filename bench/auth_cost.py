"""What an API key costs a predict request, in CPU: the fast path's key check, in process.

bench/serving.py --keys measures throughput with a key on every request against the open server;
on a shared machine that comparison swings by more than the 5% it is meant to resolve. This
measures the check itself — `KeyRing.authorize_scope`, as the predict fast path calls it: header
scan, SHA-256, lookup, `hmac.compare_digest`, expiry and scope — with 1,000 keys in the ring, a
rate-limited key's token bucket, and the open server's check (no key defined), each the best of
`--repeat` timings of `--calls` calls. Divide by the server's CPU per predict request
(`server_cpu_ms_per_request` of bench/serving.py) for the share of saturated throughput.

    python bench/auth_cost.py            # ~10 s
    python bench/auth_cost.py --quick
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import timeit
from pathlib import Path
from typing import TYPE_CHECKING, Any

from _cli import add_common_arguments
from _report import log

from featurestore.api_keys import KeyStore
from featurestore.config import RegistrySettings, ServingSettings, Settings

if TYPE_CHECKING:
    from serving.auth import KeyRing

MODEL = "bench_model"
HERE = str(Path(__file__).resolve().parent)


def key_ring_class() -> type[KeyRing]:
    """`serving.auth.KeyRing`, imported with bench/ off the path: bench/serving.py (the serving
    benchmark) would otherwise stand in for the `serving` package."""
    sys.path[:] = [entry for entry in sys.path if entry != HERE]
    from serving.auth import KeyRing  # noqa: PLC0415 - after the path is fixed

    return KeyRing


def scope_of(secret: str | None) -> dict[str, Any]:
    """An ASGI scope of a predict request, as uvicorn hands it over."""
    headers = [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json")]
    if secret is not None:
        headers.append((b"authorization", f"Bearer {secret}".encode()))
    return {"type": "http", "method": "POST", "path": f"/v1/predict/{MODEL}", "headers": headers}


def per_call_us(ring: KeyRing, scope: dict[str, Any], calls: int, repeat: int) -> float:
    needed = f"predict:{MODEL}"
    timer = timeit.Timer(lambda: ring.authorize_scope(scope, needed))
    return round(min(timer.repeat(repeat=repeat, number=calls)) / calls * 1e6, 3)


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="fstore-bench-auth-") as folder:
        open_settings = Settings(registry=RegistrySettings(path=Path(folder) / "open"))
        keyed = Settings(
            registry=RegistrySettings(path=Path(folder) / "keyed"),
            serving=ServingSettings(keys_refresh_s=60),
        )
        store = KeyStore(keyed.registry)
        for i in range(args.keys - 2):
            store.create(f"other{i}", [f"predict:model{i}"], "bench")
        _, secret = store.create("bench", [f"predict:{MODEL}"], "bench")
        _, limited = store.create("limited", ["predict:*"], "bench", rate_per_s=1e9)
        ring_class = key_ring_class()
        rings = {"open": ring_class(open_settings), "keyed": ring_class(keyed)}
        for ring in rings.values():
            ring.refresh()
        result: dict[str, Any] = {"keys": args.keys, "calls": args.calls, "repeat": args.repeat}
        result["open_us"] = per_call_us(rings["open"], scope_of(None), args.calls, args.repeat)
        result["key_us"] = per_call_us(rings["keyed"], scope_of(secret), args.calls, args.repeat)
        result["rate_limited_key_us"] = per_call_us(
            rings["keyed"], scope_of(limited), args.calls, args.repeat
        )
        result["key_cost_us"] = round(result["key_us"] - result["open_us"], 3)
        log(f"auth check per request: {result}")
        return result


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--keys", type=int, default=1000, help="keys in the registry")
    parser.add_argument("--calls", type=int, default=200_000, help="per timing")
    parser.add_argument("--repeat", type=int, default=5, help="timings; the best is kept")
    add_common_arguments(parser, files=False)
    args = parser.parse_args(argv)
    if args.quick:
        args.keys, args.calls, args.repeat = 10, 2_000, 2
    return args


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    result = run(args)
    for key in ("open_us", "key_us", "rate_limited_key_us", "key_cost_us"):
        print(f"{key:<22} {result[key]:>8} us")
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
