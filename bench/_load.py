"""Load generation with wrk, and CPU accounting of a process tree from /proc."""

from __future__ import annotations

import os
import re
import resource
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import msgspec

WRK = "/usr/bin/wrk"
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_MARKER = "BENCH_RESULT "

# wrk runs this script: a POST of a fixed body, and a machine-readable summary when done.
# Latencies are in microseconds; `errors.status` counts responses that were not 2xx/3xx.
_LUA = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [==[{body}]==]

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{marker}{{"requests":%.0f,"duration_us":%.0f,"bytes":%.0f,' ..
    '"p50_us":%.1f,"p90_us":%.1f,"p99_us":%.1f,"max_us":%.1f,"mean_us":%.1f,' ..
    '"connect_errors":%.0f,"read_errors":%.0f,"write_errors":%.0f,' ..
    '"status_errors":%.0f,"timeouts":%.0f}}\\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean,
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""


class WrkSummary(msgspec.Struct, frozen=True):
    """What wrk's `done` hook reports for one run."""

    requests: int
    duration_us: float
    bytes: int
    p50_us: float
    p90_us: float
    p99_us: float
    max_us: float
    mean_us: float
    connect_errors: int
    read_errors: int
    write_errors: int
    status_errors: int
    timeouts: int

    @property
    def errors(self) -> int:
        return (
            self.connect_errors
            + self.read_errors
            + self.write_errors
            + self.status_errors
            + self.timeouts
        )


@dataclass(frozen=True, slots=True)
class LoadResult:
    """One measured run: wrk's summary and the CPU the server and wrk spent meanwhile."""

    wrk: WrkSummary
    server_cpu_s: float
    client_cpu_s: float
    host_busy: float  # share of all cores' time not idle during the run, 0..1
    host_busy_s: float  # CPU seconds the whole machine was busy (all processes, all cores)
    wall_s: float

    @property
    def requests_per_s(self) -> float:
        return self.wrk.requests / (self.wrk.duration_us / 1e6)

    @property
    def other_cpus(self) -> float:
        """Cores' worth of CPU used by processes other than the server and wrk: noise."""
        other = self.host_busy_s - self.server_cpu_s - self.client_cpu_s
        return max(other, 0.0) / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def server_cpu_us_per_request(self) -> float:
        return self.server_cpu_s * 1e6 / max(self.wrk.requests, 1)

    @property
    def client_cpu_us_per_request(self) -> float:
        return self.client_cpu_s * 1e6 / max(self.wrk.requests, 1)


# A realistic user population: `x-targeting-key` drawn log-uniformly from `users` keys (user k
# comes back about 1/k as often as user 1: a few regulars, a long tail), and a share of the
# requests in the `beta` cohort.
_USERS_LUA = """math.randomseed(os.time())
request = function()
  local user = math.floor({users} ^ math.random())
  local headers = {{["x-targeting-key"] = "user-" .. user}}
  if math.random() < {beta_share} then headers["x-ctx-tier"] = "beta" end
  return wrk.format(nil, nil, headers, nil)
end
"""


def write_lua_script(path: Path, body: bytes, users: int = 0, beta_share: float = 0.0) -> None:
    """The wrk script POSTing `body` (JSON, so it cannot close Lua's `]==]` long string),
    with targeting keys from `users` skewed users when `users` > 0."""
    text = body.decode()
    if "]==]" in text:
        raise ValueError("the request body cannot be embedded in the wrk script")
    script = _LUA.format(body=text, marker=_MARKER)
    if users > 0:
        script += _USERS_LUA.format(users=users, beta_share=beta_share)
    path.write_text(script)


def run_wrk(
    url: str,
    script: Path,
    *,
    duration_s: float,
    connections: int,
    threads: int,
    server_pid: int,
    timeout_s: float = 10.0,
) -> LoadResult:
    """Run wrk against `url` for `duration_s`, measuring the CPU of `server_pid`'s tree."""
    command = [
        WRK,
        f"--threads={threads}",
        f"--connections={connections}",
        f"--duration={max(1, round(duration_s))}s",
        f"--timeout={max(1, round(timeout_s))}s",
        "--latency",
        f"--script={script}",
        url,
    ]
    server_before = tree_cpu_seconds(server_pid)
    host_before = _host_ticks()
    client_before = _children_cpu_seconds()
    started = time.perf_counter()
    completed = subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=False,
        timeout=duration_s + timeout_s + 30,
    )
    wall = time.perf_counter() - started
    client_cpu = _children_cpu_seconds() - client_before
    host_after = _host_ticks()
    server_cpu = tree_cpu_seconds(server_pid) - server_before
    if completed.returncode != 0:
        raise RuntimeError(f"wrk exited {completed.returncode}: {completed.stderr.strip()}")
    summary = _parse(completed.stdout)
    busy_ticks = (host_after[0] - host_before[0]) - (host_after[1] - host_before[1])
    busy = _busy_share(host_before, host_after)
    return LoadResult(summary, server_cpu, client_cpu, busy, busy_ticks / _CLOCK_TICKS, wall)


def _parse(stdout: str) -> WrkSummary:
    for line in stdout.splitlines():
        if line.startswith(_MARKER):
            return msgspec.json.decode(line[len(_MARKER) :], type=WrkSummary)
    raise RuntimeError(f"wrk printed no summary:\n{stdout}")


def process_tree(root: int) -> list[int]:
    """`root` and every process descending from it, from each process's parent in /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        stat = _read_stat(int(entry.name))
        if stat is not None:
            children.setdefault(int(stat[1]), []).append(int(entry.name))
    tree: list[int] = []
    pending = [root]
    while pending and len(tree) < 10_000:
        pid = pending.pop()
        tree.append(pid)
        pending.extend(children.get(pid, []))
    return tree


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU seconds of `root` and its live descendants (all their threads)."""
    total = 0
    for pid in process_tree(root):
        stat = _read_stat(pid)
        if stat is not None:
            total += int(stat[11]) + int(stat[12])  # utime, stime (fields 14 and 15)
    return total / _CLOCK_TICKS


def _read_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name, or None when the process is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name sits in parentheses and may itself hold spaces and parentheses.
    return raw[raw.rfind(")") + 2 :].split()


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


_CPU_LINE = re.compile(r"^cpu\s+(.*)$", re.MULTILINE)


def _host_ticks() -> tuple[int, int]:
    """(all, idle + iowait) jiffies of the whole machine from /proc/stat."""
    match = _CPU_LINE.search(Path("/proc/stat").read_text())
    if match is None:
        return 0, 0
    values = [int(v) for v in match.group(1).split()]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return sum(values[:8]), idle


def _busy_share(before: tuple[int, int], after: tuple[int, int]) -> float:
    total, idle = after[0] - before[0], after[1] - before[1]
    return 1.0 - idle / total if total > 0 else 0.0
