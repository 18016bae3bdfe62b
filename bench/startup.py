"""Start-up benchmark: how fast lmforge answers before doing any work.

    python bench/startup.py [--json OUT]

Targets (issue 5): `--help` and a config error in <= 1.5 s (no Lightning, torchmetrics or MLflow
import on those paths); `dvc repro` with nothing to do in <= 3 s (measured only when the
project's pipeline has run and is up to date). The peer is a bare `python -c pass`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed(command: list[str], repeats: int = 5, expect: int | None = 0) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        if expect is not None and done.returncode != expect:
            raise SystemExit(f"{' '.join(command)} exited {done.returncode}: {done.stderr[-500:]}")
    return statistics.median(times)


def heavy_imports(args: list[str]) -> list[str]:
    code = (
        "import sys, runpy; sys.argv = ['x', *sys.argv[1:]]\n"
        "try:\n    runpy.run_module('lmforge.pretrain', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "print('HEAVY:' + ','.join(m for m in ('lightning', 'torchmetrics', 'mlflow', 'torch') "
        "if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True)
    line = next(x for x in reversed(done.stdout.splitlines()) if x.startswith("HEAVY:"))
    return [m for m in line.removeprefix("HEAVY:").split(",") if m]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    python = [sys.executable]
    rows = {
        "python -c pass (peer)": (timed([*python, "-c", "pass"]), None),
        "python -m lmforge.pretrain --help": (timed([*python, "-m", "lmforge.pretrain", "--help"]), 1.5),
        "unknown key error": (timed([*python, "-m", "lmforge.pretrain", "model.d_modl=1"], expect=2), 1.5),
        "wrong type error": (timed([*python, "-m", "lmforge.pretrain", "model.d_model=wide"], expect=2), 1.5),
    }
    dvc = Path(sys.executable).parent / "dvc"
    status = subprocess.run([str(dvc), "status", "--quiet"], cwd=ROOT, capture_output=True)
    if (ROOT / "dvc.lock").is_file() and status.returncode == 0:
        rows["dvc repro (nothing to do)"] = (timed([str(dvc), "repro"], repeats=3), 3.0)
    else:
        print(
            "dvc repro (nothing to do): skipped, the pipeline is not up to date here (run `make run` first)"
        )
    print(f"{'command':<40}{'seconds':>9}{'target':>9}  heavy imports")
    for name, (seconds, target) in rows.items():
        extra = ""
        if "error" in name or "help" in name:
            extra = ", ".join(heavy_imports(["--help"] if "help" in name else ["model.d_modl=1"]))
            extra = extra or "none"
        print(f"{name:<40}{seconds:>9.2f}{(f'<= {target}' if target else ''):>9}  {extra}")
    if args.json:
        args.json.write_text(
            json.dumps({k: {"seconds": v, "target": t} for k, (v, t) in rows.items()}, indent=2)
        )


if __name__ == "__main__":
    main()
