"""Issue 20 on one GPU: did two pilots submitted at once overlap on the GPU? Reads what
`bench/gpu_pilot_repeat.sh queue OUT` wrote (OUT/gpu-memory.csv: nvidia-smi every second;
OUT/runs-timeline.log: `roilab runs` every 5 s), prints when each run was queued / running /
done and the GPU memory in each phase, and draws the memory timeline with the phases.

    python bench/gpu_queue_timeline.py OUT [PNG]
"""
from __future__ import annotations

import re
import sys
from datetime import datetime
from pathlib import Path

import pandas as pd


def read_memory(out: Path) -> pd.DataFrame:
    frame = pd.read_csv(out / "gpu-memory.csv", skipinitialspace=True)
    frame.columns = ["time", "mib", "util"]
    frame["time"] = pd.to_datetime(frame["time"], format="%Y/%m/%d %H:%M:%S.%f")
    return frame


def read_states(out: Path, day: datetime) -> pd.DataFrame:
    rows, stamp = [], None
    for line in (out / "runs-timeline.log").read_text().splitlines():
        if line.startswith("== "):
            clock = datetime.strptime(line[3:].strip(), "%H:%M:%S").time()
            stamp = datetime.combine(day.date(), clock)
            if stamp < day.replace(hour=0, minute=0, second=0) or (rows and stamp < rows[-1][0]):
                stamp = stamp + pd.Timedelta(days=1)
        elif (m := re.match(r"#(\d+) \S+ \S+ (queued|running|done|failed|partial|interrupted)",
                            line)) and stamp is not None:
            rows.append((stamp, int(m.group(1)), m.group(2)))
    return pd.DataFrame(rows, columns=["time", "run", "state"])


def phases(states: pd.DataFrame) -> pd.DataFrame:
    """First and last sample of each (run, state)."""
    return (states.groupby(["run", "state"])["time"].agg(["min", "max"]).reset_index()
            .sort_values("min"))


def main(argv: list[str]) -> int:
    out = Path(argv[0])
    memory = read_memory(out)
    states = read_states(out, memory["time"].iloc[0].to_pydatetime())
    table = phases(states)
    print(table.to_string(index=False))
    running = table[table.state == "running"].set_index("run")
    overlap = 0.0
    runs = list(running.index)
    for i, a in enumerate(runs):
        for b in runs[i + 1:]:
            lo = max(running.loc[a, "min"], running.loc[b, "min"])
            hi = min(running.loc[a, "max"], running.loc[b, "max"])
            overlap += max(0.0, (hi - lo).total_seconds())
    print(f"seconds two runs were both 'running': {overlap:.0f} (samples every 5 s)")
    for run in runs:
        window = memory[(memory.time >= running.loc[run, "min"])
                        & (memory.time <= running.loc[run, "max"])]
        print(f"run {run} running {running.loc[run, 'min']:%H:%M:%S}-"
              f"{running.loc[run, 'max']:%H:%M:%S}: GPU memory max {window.mib.max():,} MiB")
    print(f"GPU memory max over the whole timeline: {memory.mib.max():,} MiB of one GPU")
    if len(argv) > 1:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(10, 3.6))
        ax.plot(memory.time, memory.mib / 1024, color="black", lw=1)
        colours = {"queued": "#bbbbbb", "running": "#4c9be8"}
        for row in table.itertuples():
            if row.state in colours:
                y = 82 if row.run % 2 else 86
                ax.hlines(y, row.min, row.max, colors=colours[row.state], lw=6)
                ax.text(row.min, y + 1.2, f"run {row.run} {row.state}", fontsize=8)
        ax.set_ylabel("GPU memory used (GiB)")
        ax.set_ylim(0, 92)
        ax.set_title("Two pilots submitted at once to the local Ray on one H100: "
                     "the second queues, engines never overlap")
        fig.autofmt_xdate()
        fig.tight_layout()
        fig.savefig(argv[1], dpi=110)
        print(f"wrote {argv[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
