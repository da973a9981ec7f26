"""Turn measured values into the console table, latest.json, latest.md and ratios.png.

Each row's ratio is computed per repetition (ours and baseline measured back to back), then
summarised by median and range, so a slow moment of the machine hits both sides of a pair.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks.common import Detail, Row

__all__ = ["Brokers", "Result", "machine", "write_chart", "write_json", "write_markdown"]

README_START = "<!-- results:start (written by `make bench`; do not edit by hand) -->"
README_END = "<!-- results:end -->"


@dataclass(slots=True)
class Result:
    row: Row
    ours: list[float] = field(default_factory=list)
    baseline: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def ratios(self) -> list[float]:
        return [self.row.ratio(o, b) for o, b in zip(self.ours, self.baseline, strict=True)]

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.ours) and len(self.ours) == len(self.baseline)

    def meets(self) -> bool | None:
        return self.row.meets(statistics.median(self.ratios)) if self.ok else None


@dataclass(frozen=True, slots=True, kw_only=True)
class Brokers:
    """What each broker of the run was, in words for the report."""

    redis: str
    cluster: str
    kafka: str
    nats: str


def summary(values: list[float]) -> dict[str, Any]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "values": values,
    }


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _commit() -> str:
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, check=True
        ).stdout.decode()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "dotmac"], cwd=root, capture_output=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.strip() + (" + uncommitted changes under dotmac/" if dirty else "")


def machine(brokers: Brokers, load_at_start: float) -> dict[str, str]:
    """Where the numbers were taken: they only mean something next to this.

    The load average says whether other work shared the CPUs (it widens the ranges).
    """
    packages = ("redis", "hiredis", "aiokafka", "nats-py", "orjson", "faststream")
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_model(),
        "cores": str(os.cpu_count()),
        "load_average": f"{load_at_start:.2f} at start, {os.getloadavg()[0]:.2f} at end (1 min)",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "os": platform.platform(),
        "redis_server": brokers.redis,
        "redis_cluster": brokers.cluster,
        "kafka_broker": brokers.kafka,
        "nats_server": brokers.nats,
        "packages": ", ".join(f"{p} {_version(p)}" for p in packages),
        "dotmac_commit": _commit(),
    }


def _fmt(value: float, unit: str) -> str:
    return f"{value:,.2f}" if unit == "ms" or abs(value) < 100 else f"{value:,.0f}"


def _cell(values: list[float], unit: str) -> str:
    if not values:
        return "-"
    med = statistics.median(values)
    return f"{_fmt(med, unit)} {unit} ({_fmt(min(values), unit)}..{_fmt(max(values), unit)})"


def _ratio_cell(result: Result) -> str:
    ratios = result.ratios
    return f"{statistics.median(ratios):.2f} ({min(ratios):.2f}..{max(ratios):.2f})"


def _target(row: Row) -> str:
    if row.target is None:
        return "info" if row.higher_is_better else "info (lower is better)"
    op, value = row.target
    better = "higher" if op == ">=" else "lower"
    return f"{op} {value:g} ({better} is better)"


def _met(result: Result) -> str:
    meets = result.meets()
    return {True: "yes", False: "NO", None: "-"}[meets]


def console_table(results: list[Result]) -> str:
    head = f"{'row':<26} {'ours':>28} {'baseline':>28} {'ratio':>20} {'target':>8} {'met':>4}"
    lines = [head, "-" * len(head)]
    for r in results:
        target = "info" if r.row.target is None else f"{r.row.target[0]}{r.row.target[1]:g}"
        if not r.ok:
            lines.append(f"{r.row.id:<26} FAILED: {r.error}")
            continue
        lines.append(
            f"{r.row.id:<26} {_cell(r.ours, r.row.unit):>28} {_cell(r.baseline, r.row.unit):>28}"
            f" {_ratio_cell(r):>20} {target:>8} {_met(r):>4}"
        )
    return "\n".join(lines)


def markdown(
    results: list[Result],
    info: dict[str, str],
    repeat: int,
    chart: str | None,
    details: list[Detail],
) -> str:
    lines = [
        f"- date: {info['date']}, {info['seconds']} s for the whole run",
        f"- machine: {info['cpu']}, {info['cores']} cores, load average {info['load_average']}",
        f"- python: {info['python']} on {info['os']}",
        f"- brokers: {info['redis_server']}; Redis Cluster: {info['redis_cluster']}; "
        f"Kafka: {info['kafka_broker']}; NATS: {info['nats_server']}",
        f"- clients: {info['packages']}",
        f"- dotmac-events: commit {info['dotmac_commit']}",
        "",
        f"Median of {repeat} interleaved repetitions, range (min..max) in brackets. The ratio is "
        "ours / baseline per repetition; for ev/s rows higher is better, for latency (ms), "
        "memory (B) and spread (x mean) rows lower is better.",
        "",
    ]
    if chart is not None:
        lines += [f"![ratio ours/baseline per row, target marked]({chart})", ""]
    lines += [
        "| id | ours | measured | baseline | measured | ratio ours/baseline | target | met |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if not r.ok:
            lines.append(
                f"| `{r.row.id}` | {r.row.path} | FAILED: {r.error} | {r.row.baseline} | | | | |"
            )
            continue
        lines.append(
            f"| `{r.row.id}` | {r.row.path} | {_cell(r.ours, r.row.unit)} | {r.row.baseline} | "
            f"{_cell(r.baseline, r.row.unit)} | {_ratio_cell(r)} | {_target(r.row)} | {_met(r)} |"
        )
    for detail in details:
        lines += ["", f"{detail.title}:", "", *detail.lines]
    return "\n".join(lines) + "\n"


def write_json(path: Path, results: list[Result], extra: dict[str, Any]) -> None:
    rows = [
        {
            "id": r.row.id,
            "path": r.row.path,
            "baseline": r.row.baseline,
            "unit": r.row.unit,
            "target": None
            if r.row.target is None
            else {"op": r.row.target[0], "value": r.row.target[1]},
            "ratio_better": "higher" if r.row.higher_is_better else "lower",
            "ours": summary(r.ours) if r.ok else None,
            "baseline_value": summary(r.baseline) if r.ok else None,
            "ratio": summary(r.ratios) if r.ok else None,
            "meets_target": r.meets(),
            "error": r.error,
        }
        for r in results
    ]
    path.write_text(json.dumps({**extra, "rows": rows}, indent=2) + "\n")


def write_markdown(
    out: Path, readme: Path | None, results: list[Result], *, chart: bool, **kw: Any
) -> None:
    """``out/latest.md``; and, given ``readme``, the same table between its result markers."""
    (out / "latest.md").write_text(markdown(results, chart="ratios.png" if chart else None, **kw))
    if readme is None:
        return
    text = readme.read_text()
    start, end = text.index(README_START), text.index(README_END)
    block = markdown(results, chart=f"{out.name}/ratios.png" if chart else None, **kw)
    readme.write_text(f"{text[: start + len(README_START)]}\n{block}{text[end:]}")


def write_chart(path: Path, results: list[Result]) -> None:
    """Horizontal bars of the median ratio, whiskers min..max, a black tick at each target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    shown = [r for r in results if r.ok]
    fig, ax = plt.subplots(figsize=(10, 0.5 * len(shown) + 1.6))
    for y, r in enumerate(shown):
        ratios = r.ratios
        med, low, high = statistics.median(ratios), min(ratios), max(ratios)
        color = {True: "#4c9a2a", False: "#c0392b", None: "#8c8c8c"}[r.meets()]
        ax.barh(y, med, color=color, xerr=[[med - low], [high - med]], capsize=3)
        ax.text(high, y, f"  {med:.2f}", va="center", fontsize=8)
        if r.row.target is not None:
            value = r.row.target[1]
            ax.plot([value, value], [y - 0.42, y + 0.42], color="black", linewidth=2.5)
    labels = [
        f"{r.row.id} ({'higher' if r.row.higher_is_better else 'lower'} is better)" for r in shown
    ]
    ax.set_yticks(range(len(shown)), labels, fontsize=8)
    ax.invert_yaxis()
    # Log scale: 0.1x and 10x are as far from parity, and one outlier does not flatten the rest.
    ax.set_xscale("log")
    lowest = min([0.5, *(min(r.ratios) for r in shown)])
    highest = max([2.5, *(max(r.ratios) for r in shown)])
    ax.set_xlim(lowest / 1.5, highest * 2)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    ax.axvline(1.0, color="#555555", linestyle=":", linewidth=1)
    ax.set_xlabel("ratio ours / baseline, log scale: median, whiskers min..max; tick: target")
    ax.set_title("dotmac-events against raw clients (green: target met, red: not, grey: info)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
