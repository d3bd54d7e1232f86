#!/usr/bin/env python3
"""Reference values for tests/pipeline/eval/stats.test.ts and tests/pipeline/eval/special.test.ts, from scipy.

Writes stats_reference.json beside this script. Inputs are generated here with a fixed numpy seed
and stored in the JSON, so the TypeScript tests run on exactly the same numbers.
Run: python3 reference/eval/make_stats_reference.py  (needs numpy + scipy >= 1.15, whose
wilcoxon method='auto' uses an exact permutation test for n <= 13 with ties or zeros).
"""
import json
import os

import numpy as np
import scipy
from scipy import stats


def case(name, base, cand):
    base = [float(x) for x in base]
    cand = [float(x) for x in cand]
    w = stats.wilcoxon(cand, base)  # defaults: zero_method='wilcox', correction=False, method='auto'
    t = stats.ttest_rel(cand, base)
    d = np.asarray(cand) - np.asarray(base)
    boot = stats.bootstrap((d,), np.mean, confidence_level=0.95, n_resamples=20000,
                           method="percentile", random_state=np.random.default_rng(7))
    return {
        "name": name,
        "base": base,
        "candidate": cand,
        "wilcoxon": {"statistic": float(w.statistic), "pvalue": float(w.pvalue)},
        "ttest_rel": {"statistic": float(t.statistic), "pvalue": float(t.pvalue), "df": float(t.df)},
        "dz": float(d.mean() / d.std(ddof=1)),
        "mean_diff": float(d.mean()),
        "bootstrap_percentile_95": [float(boot.confidence_interval.low), float(boot.confidence_interval.high)],
        "n_zero": int(np.sum(d == 0)),
        "has_ties": bool(len(np.unique(np.abs(d[d != 0]))) < np.sum(d != 0)),
    }


def holm(p):
    # Holm step-down, written from the definition (statsmodels is not a dependency here).
    p = np.asarray(p, dtype=float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adj = np.empty(m)
    running = 0.0
    for rank, idx in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[idx]))
        adj[idx] = running
    return adj.tolist()


def main():
    rng = np.random.default_rng(20240611)
    cases = []
    # n = 10, continuous, no ties -> exact distribution
    b = rng.normal(0.40, 0.10, 10); cases.append(case("exact_n10", b, b + rng.normal(0.03, 0.05, 10)))
    # n = 25, continuous -> exact
    b = rng.normal(0.30, 0.10, 25); cases.append(case("exact_n25", b, b + rng.normal(0.02, 0.04, 25)))
    # n = 50, continuous -> exact (boundary)
    b = rng.normal(0.30, 0.10, 50); cases.append(case("exact_n50", b, b + rng.normal(0.01, 0.05, 50)))
    # n = 51 -> asymptotic even without ties
    b = rng.normal(0.30, 0.10, 51); cases.append(case("asymptotic_n51", b, b + rng.normal(0.01, 0.05, 51)))
    # n = 12 with zeros (exact match style 0/1 scores) -> permutation
    b = rng.integers(0, 2, 12); c = rng.integers(0, 2, 12); cases.append(case("perm_zeros_n12", b, c))
    # n = 9 with ties, no zeros -> permutation
    b = np.round(rng.uniform(0, 1, 9), 1); c = b + np.array([0.1, -0.1, 0.2, 0.1, 0.3, -0.2, 0.1, 0.2, 0.1])
    cases.append(case("perm_ties_n9", b, np.round(c, 6)))
    # n = 13 with ties and zeros -> permutation (boundary)
    b = np.round(rng.uniform(0, 1, 13), 1); c = np.round(b + rng.choice([-0.1, 0.0, 0.1, 0.2], 13), 6)
    cases.append(case("perm_ties_zeros_n13", b, c))
    # n = 40 with ties and zeros -> normal approximation with tie correction
    b = np.round(rng.uniform(0, 1, 40), 1); c = np.round(b + rng.choice([-0.1, 0.0, 0.1, 0.2], 40), 6)
    cases.append(case("asymptotic_ties_zeros_n40", b, c))
    # n = 120 ROUGE-like scores in [0, 1], a few exact ties -> asymptotic
    b = np.clip(rng.beta(4, 6, 120), 0, 1); c = np.clip(b + rng.normal(0.015, 0.06, 120), 0, 1)
    cases.append(case("asymptotic_n120", np.round(b, 3), np.round(c, 3)))
    # candidate clearly worse, n = 30 with ties -> asymptotic, tiny p
    b = np.round(rng.uniform(0.5, 1, 30), 2); c = np.round(b - rng.uniform(0.05, 0.3, 30), 2)
    cases.append(case("worse_n30", b, c))

    special = {
        "norm_sf": [[z, float(stats.norm.sf(z))] for z in [0.0, 0.1, 0.5, 1.0, 1.959963984540054, 2.5, 3.3, 5.0, 8.0, -1.3]],
        "t_sf": [[t, df, float(stats.t.sf(t, df))] for t, df in [(0.5, 3), (1.0, 9), (2.262, 9), (2.0, 29), (3.5, 4), (0.1, 119), (6.0, 11), (-1.2, 7), (10.0, 2)]],
    }
    holm_cases = [[0.01, 0.04, 0.03, 0.005], [0.5, 0.2, 0.04], [0.001, 0.2, 0.01, 0.3, 0.02]]
    out = {
        "generator": "reference/eval/make_stats_reference.py",
        "scipy_version": scipy.__version__,
        "numpy_version": np.__version__,
        "cases": cases,
        "special": special,
        "holm": [{"p": p, "adjusted": holm(p)} for p in holm_cases],
    }
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "stats_reference.json")
    with open(path + ".tmp", "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    os.replace(path + ".tmp", path)


if __name__ == "__main__":
    main()
