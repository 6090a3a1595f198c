"""How steady this machine's own compute is: the same fixed computation timed in windows of
a pass's length, side by side in one run, against the spread at which roilab calls a
variant's passes unstable (engine.pilot.protocol.UNSTABLE_SPREAD).

    python bench/bench_machine_noise.py [--windows 10] [--seconds 10] [--threads N]

Each window multiplies two 1024x1024 float32 matrices as many times as it can in the
window's seconds (torch, the pilot's thread count by default) and prints the rate; then the
median, the (max - min) / median spread, and the CPU time stolen by the hypervisor over the
run (/proc/stat's steal). Nothing else should run beside it: on a machine the OS calls quiet,
a spread above the flag's is the host's (other tenants, clocks, memory bandwidth), which no
protocol inside the machine can see from its load figures.
"""
from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=10.0, help="one window (a pass's length)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    import psutil
    import torch

    from engine.pilot.protocol import UNSTABLE_SPREAD

    if args.threads:
        torch.set_num_threads(args.threads)
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    a @ b  # first use outside the windows
    rates = []
    steal0, t_start = psutil.cpu_times().steal, time.perf_counter()
    for k in range(args.windows):
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < args.seconds:
            a @ b
            n += 1
        rates.append(n / (time.perf_counter() - t0))
        print(f"window {k + 1:2d}: {rates[-1]:7.1f} matmul/s", flush=True)
    wall = time.perf_counter() - t_start
    steal = psutil.cpu_times().steal - steal0
    med = statistics.median(rates)
    spread = (max(rates) - min(rates)) / med
    print(f"{torch.get_num_threads()} threads, {args.windows} windows of {args.seconds:g} s: "
          f"median {med:.1f} matmul/s, min {min(rates):.1f}, max {max(rates):.1f}")
    print(f"spread (max - min) / median: {spread:.1%}; roilab's unstable flag: "
          f"{UNSTABLE_SPREAD:.0%} ({spread / UNSTABLE_SPREAD:.1f}x the flag)")
    print(f"CPU time stolen by the hypervisor: {steal:.2f} s of {wall:.0f} s")


if __name__ == "__main__":
    main()
