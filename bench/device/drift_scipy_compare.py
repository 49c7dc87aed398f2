#!/usr/bin/env python3
"""Compares tessera's two-sample KS test (and smoothed KL) with scipy on random samples.

Usage: drift_scipy_compare.py TOOL [--out RESULT.json] [--seed S]
  TOOL is the drift_ks_compare binary (build/runtime/drift/drift_ks_compare).
Prints max |dD| and max relative |dp| over all cases and exits 1 if they exceed the
tolerances (D: 1e-9 absolute, p: 1e-6 relative).
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile

import numpy as np
import scipy
from scipy import stats

D_TOL = 1e-9
P_REL_TOL = 1e-6


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def make_cases(rng):
    """(kind, x, y) triples covering every p-value path scipy takes."""
    cases = []
    # Small samples with many ties: exact path, both equal and unequal sizes.
    for n1, n2 in [(3, 3), (5, 5), (3, 7), (10, 12), (20, 20), (37, 50), (64, 48)]:
        for hi in (3, 6):
            cases.append(("small_ties", rng.integers(0, hi, n1), rng.integers(0, hi, n2)))
    # Medium continuous samples, with and without a shift: exact path.
    for n1, n2 in [(100, 100), (500, 800), (1000, 1000), (999, 1000), (2000, 3000), (10000, 7)]:
        for shift in (0.0, 0.05, 0.2, 1.0):
            cases.append(("medium", rng.normal(0, 1, n1), rng.normal(shift, 1, n2)))
    # Large samples (> 10000): asymptotic path over a range of effective sizes and shifts
    # so each branch of the Kolmogorov distribution is reached.
    for n1, n2 in [(12000, 12000), (15000, 20000), (20000, 500), (10001, 50), (30000, 9)]:
        for shift in (0.0, 0.01, 0.05, 0.2, 1.0):
            cases.append(("large", rng.normal(0, 1, n1), rng.normal(shift, 1, n2)))
    cases.append(("large_ties", rng.integers(0, 20, 15000), rng.integers(0, 21, 11000)))
    return cases


def kl_cases(rng):
    out = []
    for k in (2, 10, 16):
        for alpha in (0.5, 1.0):
            live = rng.integers(0, 50, k)
            ref = rng.integers(0, 50, k)
            ref[0] = 0  # an empty bin, covered by the smoothing
            out.append((live, ref, alpha))
    return out


def distribution_cases():
    """(kind, n, x) grid over the Kolmogorov and Smirnov distributions, so that every branch
    (Ruben-Gambino, Durbin, Pomeranz, Pelz-Good, 2*Smirnov, tails) is compared directly."""
    out = []
    for n in (1, 2, 3, 7, 20, 100, 140, 141, 500, 5000, 60000, 150000, 2000000):
        for z in (0.3, 0.6, 0.9, 1.2, 1.6, 2.2, 3.0, 5.0):  # x = z / sqrt(n)
            x = z / np.sqrt(n)
            if 0 < x < 1:
                out.append(("kstwo", n, float(x)))
                out.append(("smirnov", n, float(x)))
        for x in (0.6 / n, 0.9 / n, 1.0 - 1.5 / n, 0.5, 0.75):
            if 0 < x < 1:
                out.append(("kstwo", n, float(x)))
    return out


def scipy_kl(live, ref, alpha):
    p = (live + alpha) / (live.sum() + alpha * len(live))
    q = (ref + alpha) / (ref.sum() + alpha * len(ref))
    return float(stats.entropy(p, q))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tool", help="path to the drift_ks_compare binary")
    ap.add_argument("--out", help="write the comparison summary as JSON here")
    ap.add_argument("--seed", type=int, default=20240601)
    args = ap.parse_args()

    rng = np.random.default_rng(args.seed)
    ks = make_cases(rng)
    kl = kl_cases(rng)
    dist = distribution_cases()
    payload = {"cases": [{"x": x.astype(float).tolist(), "y": y.astype(float).tolist()}
                         for _, x, y in ks] +
                        [{"live": l.tolist(), "reference": r.tolist(), "alpha": a}
                         for l, r, a in kl] +
                        [{kind: n, "at": x} for kind, n, x in dist]}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(payload, f)
        path = f.name
    try:
        proc = subprocess.run([args.tool, path], capture_output=True, text=True, check=True)
    finally:
        os.unlink(path)
    results = json.loads(proc.stdout)["results"]

    rows = []
    max_dd = max_rel_dp = max_abs_dp = 0.0
    for (kind, x, y), r in zip(ks, results[:len(ks)]):
        ref = stats.ks_2samp(x, y)
        dd = abs(r["d"] - ref.statistic)
        dp = abs(r["p"] - ref.pvalue)
        rel = dp / ref.pvalue if ref.pvalue > 0 else dp
        max_dd, max_abs_dp, max_rel_dp = max(max_dd, dd), max(max_abs_dp, dp), max(max_rel_dp, rel)
        rows.append({"kind": kind, "n1": len(x), "n2": len(y), "d_scipy": float(ref.statistic),
                     "d_tessera": r["d"], "p_scipy": float(ref.pvalue), "p_tessera": r["p"],
                     "exact": r["exact"], "rel_dp": rel})
    max_kl = 0.0
    for (live, ref, alpha), r in zip(kl, results[len(ks):len(ks) + len(kl)]):
        want = scipy_kl(live, ref, alpha)
        max_kl = max(max_kl, abs(r["kl"] - want) / max(want, 1e-300))
    max_dist = 0.0
    dist_rows = []
    for (kind, n, x), r in zip(dist, results[len(ks) + len(kl):]):
        want = float(stats.kstwo.sf(x, n) if kind == "kstwo" else scipy.special.smirnov(n, x))
        rel = abs(r["sf"] - want) / want if want > 0 else abs(r["sf"] - want)
        max_dist = max(max_dist, rel)
        dist_rows.append({"kind": kind, "n": n, "x": x, "sf_scipy": want, "sf_tessera": r["sf"],
                          "rel": rel})

    ok = (max_dd <= D_TOL and max_rel_dp <= P_REL_TOL and max_kl <= 1e-12 and
          max_dist <= P_REL_TOL)
    summary = {
        "what": "tessera KsTwoSample vs scipy.stats.ks_2samp (two-sided, method='auto'); "
                "KlDivergence vs scipy.stats.entropy on the same smoothed proportions",
        "scipy_version": scipy.__version__,
        "numpy_version": np.__version__,
        "python": platform.python_version(),
        "machine": {"node": platform.node(), "system": platform.platform(),
                    "cpu": cpu_model(), "cpus": os.cpu_count()},
        "seed": args.seed,
        "ks_cases": len(ks),
        "kl_cases": len(kl),
        "max_abs_dD": max_dd,
        "max_rel_dp": max_rel_dp,
        "max_abs_dp": max_abs_dp,
        "max_rel_dkl": max_kl,
        "distribution_points": len(dist),
        "max_rel_dsf_distribution": max_dist,
        "tolerance": {"dD": D_TOL, "rel_dp": P_REL_TOL},
        "pass": ok,
        "cases": rows,
        "distribution": dist_rows,
    }
    print(f"scipy {scipy.__version__}: {len(ks)} KS cases, max |dD| = {max_dd:.3e}, "
          f"max rel |dp| = {max_rel_dp:.3e} (max abs {max_abs_dp:.3e}); "
          f"{len(kl)} KL cases, max rel |dKL| = {max_kl:.3e}; {len(dist)} kstwo/smirnov "
          f"points, max rel |dsf| = {max_dist:.3e}; {'PASS' if ok else 'FAIL'}")
    worst = sorted(rows, key=lambda r: -r["rel_dp"])[:3]
    for w in worst:
        print(f"  worst: {w['kind']} n1={w['n1']} n2={w['n2']} p_scipy={w['p_scipy']:.6e} "
              f"p_tessera={w['p_tessera']:.6e} rel={w['rel_dp']:.2e}")
    for w in sorted(dist_rows, key=lambda r: -r["rel"])[:3]:
        print(f"  worst: {w['kind']}(n={w['n']}, x={w['x']:.6g}) scipy={w['sf_scipy']:.6e} "
              f"tessera={w['sf_tessera']:.6e} rel={w['rel']:.2e}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(summary, f, indent=1)
            f.write("\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
