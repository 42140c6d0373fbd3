"""Peak resident memory on Linux, for the benchmarks: read VmHWM / VmRSS, reset the peak."""

from __future__ import annotations


def status_mb(key: str) -> float:
    """A ``/proc/self/status`` size field (``VmHWM``, ``VmRSS``...) in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {key} in /proc/self/status")


def peak_mb() -> float:
    """Peak resident memory since the last :func:`reset_peak` (VmHWM), in MiB."""
    return status_mb("VmHWM")


def rss_mb() -> float:
    return status_mb("VmRSS")


def reset_peak() -> None:
    """Reset the peak-RSS counter (Linux clear_refs '5'); a child otherwise inherits its parent's peak."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
