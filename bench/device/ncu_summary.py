#!/usr/bin/env python3
"""Per-kernel account of an `ncu --csv` run (gpu__time_duration.sum, dram__bytes_*):
calls, total time, share and achieved DRAM bandwidth, largest first.
usage: ncu_summary.py FILE.csv [--label TEXT]"""
import collections
import csv
import re
import sys

UNITS_T = {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3}
UNITS_B = {"byte": 1, "Kbyte": 1e3, "Mbyte": 1e6, "Gbyte": 1e9, "B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9}


def main():
    path = sys.argv[1]
    label = sys.argv[3] if len(sys.argv) > 3 and sys.argv[2] == "--label" else path
    rows = [r for r in csv.DictReader(l for l in open(path) if l.startswith('"'))]
    agg = collections.defaultdict(lambda: [0, 0.0, 0.0])
    for r in rows:
        name = re.sub(r"\(.*", "", r["Kernel Name"])[:64]
        v = float(r["Metric Value"].replace(",", ""))
        a = agg[name]
        m = r["Metric Name"]
        if m == "gpu__time_duration.sum":
            a[0] += 1
            a[1] += v * UNITS_T[r["Metric Unit"]]
        elif m.startswith("dram__bytes"):
            a[2] += v * UNITS_B[r["Metric Unit"]]
    total_us = sum(a[1] for a in agg.values())
    total_b = sum(a[2] for a in agg.values())
    print(f"== {label}")
    print(f"{'kernel':64s} {'calls':>5s} {'us':>9s} {'share':>6s} {'GB/s':>7s}")
    for name, a in sorted(agg.items(), key=lambda kv: -kv[1][1]):
        print(f"{name:64s} {a[0]:5d} {a[1]:9.1f} {100 * a[1] / max(total_us, 1e-9):5.1f}% "
              f"{a[2] / max(a[1], 1e-9) / 1e3:7.0f}")
    print(f"total kernel time {total_us / 1e3:.3f} ms for {total_b / 1e9:.2f} GB of DRAM traffic "
          f"({total_b / max(total_us, 1e-9) / 1e3:.0f} GB/s)")


if __name__ == "__main__":
    main()
