"""Copy a full reproduction's run folder into ``results/NAME/`` with its claims table.

    python tools/publish_run.py RUN_DIR results/NAME --wall 892 --cpu 212 --rss-mib 562 \
        --machine "2 CPU cores shared with ..." [--note "..."]

Writes ``claims.json`` (the run's facts and its claims), ``summary.md`` (the claims
table), ``config.json`` and ``figures/`` (copied). The commit is the checkout's HEAD.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from pathlib import Path

VERDICT = {True: "holds", False: "does not hold", None: "undecided"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("dest", type=Path)
    ap.add_argument("--wall", type=float, required=True, help="wall seconds (/usr/bin/time)")
    ap.add_argument("--cpu", type=float, default=None, help="CPU seconds (user)")
    ap.add_argument("--rss-mib", type=float, default=None, help="peak RSS in MiB")
    ap.add_argument("--machine", required=True)
    ap.add_argument("--command", default="")
    ap.add_argument("--note", default="")
    args = ap.parse_args()
    res = json.loads((args.run_dir / "results.json").read_text())
    name = res["name"]
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    command = args.command or f"OMP_NUM_THREADS=1 hesslab reproduce {name} --threads 1 (full size)"
    claims = [
        {k: c.get(k) for k in ("section", "claim", "measured", "holds")} for c in res["claims"]
    ]
    run = {
        "name": name,
        "command": command,
        "commit": commit,
        "wall_seconds": args.wall,
        "max_rss_mib": args.rss_mib,
        "machine": args.machine,
        "status": res["status"],
        "cpu_seconds": args.cpu,
        "resumed": False,
    }
    counts = {v: sum(VERDICT[c["holds"]] == v for c in claims) for v in VERDICT.values()}
    args.dest.mkdir(parents=True, exist_ok=True)
    (args.dest / "claims.json").write_text(
        json.dumps({"run": run, "claims": claims}, indent=2, ensure_ascii=False) + "\n"
    )
    shutil.copy(args.run_dir / "config.json", args.dest / "config.json")
    if (args.dest / "figures").exists():
        shutil.rmtree(args.dest / "figures")
    shutil.copytree(args.run_dir / "figures", args.dest / "figures")
    cpu = f" ({args.cpu:.0f} s CPU, one torch thread)" if args.cpu else ""
    rss = f"; peak memory {args.rss_mib:.1f} MiB" if args.rss_mib else ""
    lines = [
        f"# {name}: full configuration",
        "",
        f"- command: `{command}` (commit {commit[:10]})",
        f"- wall time: {args.wall:.0f} s{cpu}{rss}; {args.machine}",
        f"- status: {res['status']}; claims: {counts['holds']} hold, "
        f"{counts['does not hold']} do not hold, {counts['undecided']} undecided",
    ]
    if args.note:
        lines.append(f"- {args.note}")
    lines += ["", "| section | claim | measured (statistic, rule) | verdict |", "|---|---|---|---|"]
    for c in claims:
        cells = [c["section"], c["claim"], str(c["measured"]), VERDICT[c["holds"]]]
        lines.append("| " + " | ".join(s.replace("|", "\\|") for s in cells) + " |")
    (args.dest / "summary.md").write_text("\n".join(lines) + "\n")
    print(f"{args.dest}: {counts}")


if __name__ == "__main__":
    main()
