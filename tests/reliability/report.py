#!/usr/bin/env python3
"""Prints the table of `make reliability` from the JSON lines the fault tests append to
RELIABILITY_REPORT (one line per run; see `Report` in tests/e2e/harness/report.rs).

    tests/reliability/report.py FILE.jsonl [MORE.jsonl ...]

One row per fault, in the order the faults first ran: how many runs, how many passed (and the
invariant checked), the Chroma calls beyond the floor (one POST per source created, one DELETE
per source removed; every list call is extra), and the time from the end of the fault to every
object settled. Markdown, so it can go into the README as is.
"""

import json
import statistics
import sys


def size(run):
    """The case's size, from the figures the test recorded."""
    parts = [f"{run['objects']} objects"] if "objects" in run else []
    for key, label in [
        ("kills", "kills"),
        ("cuts", "cuts"),
        ("writers", "writers"),
    ]:
        if key in run:
            parts.append(f"{run[key]} {label}")
    if "error_rate" in run:
        parts.append(f"{round(run['error_rate'] * 100)}% 5xx")
    return ", ".join(parts)


def extra(run):
    """Calls beyond the floor: of sources, or of invocations for the cases on SyncRuns."""
    if "create_invocation_calls" in run:
        return run["create_invocation_calls"] - run["objects"] + run["list_invocation_calls"]
    return run["extra"]


def extra_text(run):
    if "create_invocation_calls" in run:
        post = run["create_invocation_calls"] - run["objects"]
        return (f"{extra(run)} (+{post} POST, {run['list_invocation_calls']} list of invocations; "
                f"{run['looks_per_run']:.1f} looks per run; floor {run['objects']})")
    post = run["creates"] - run["committed"]
    delete = run["deletes"] - run["removed"]
    text = f"{run['extra']} (+{post} POST, +{delete} DELETE, {run['lists']} list"
    if "lists_per_restart" in run:
        text += f" ({run['lists_per_restart']:.1f} per restart)"
    if run.get("gets"):
        text += f", {run['gets']} get"
    text += f"; floor {run['floor']})"
    if run["fault"] == "Chroma fault storm":
        text += f"; {sum(run['injected'].values())} faulty answers"
    return text


def secs(values):
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.1f} s"
    return f"median {statistics.median(values):.1f} s, max {max(values):.1f} s"


def main(paths):
    runs = []
    for path in paths:
        with open(path) as f:
            runs += [json.loads(line) for line in f if line.strip()]
    if not runs:
        sys.exit(f"no runs in {', '.join(paths)}")
    faults = {}
    for run in runs:
        faults.setdefault(run["fault"], []).append(run)

    print("| fault | runs | outcome | extra calls (worst run) | time to converge |")
    print("|---|---|---|---|---|")
    for fault, group in faults.items():
        sizes = sorted({size(r) for r in group})
        seeds = [r["seed"] for r in group if r.get("seed") is not None]
        runs_text = str(len(group))
        if seeds:
            runs_text += f" (seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))})"
        passed = sum(r["outcome"] == "pass" for r in group)
        failed = [str(r.get("seed", "-")) for r in group if r["outcome"] != "pass"]
        outcome = f"{passed}/{len(group)} pass"
        if failed and seeds:
            outcome = f"**{len(failed)} FAIL** (seed {', '.join(failed)}), " + outcome
        elif failed:
            outcome = f"**{len(failed)} FAIL**, " + outcome
        invariants = {r.get("invariant") for r in group} - {None}
        if invariants:
            outcome += ": " + "; ".join(sorted(invariants))
        worst = max(group, key=extra)
        print(
            f"| {fault} ({'; '.join(sizes)}) | {runs_text} | {outcome} | {extra_text(worst)} "
            f"| {secs([r.get('converge_secs') for r in group])} |"
        )
    first, last = min(r["at"] for r in runs), max(r["at"] for r in runs)
    print(f"\n{len(runs)} runs, {first[:19]}Z to {last[:19]}Z")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
