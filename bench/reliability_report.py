"""Reliability report: inject faults into real CLI runs and try bad inputs, then print a table.

    python -m bench.reliability_report [--seeds 3] [--no-mauve] [--keep DIR]    (from the repository root)

Faults (tests/support/faults.py, the same scenarios tests/cli/test_faults.py asserts on): SIGKILL of a
perplexity run at seeded points and of a MAUVE generation run, a store garbled in the middle,
cut to half, or with one number changed (valid JSON), a full disk (RLIMIT_FSIZE), a read-only
store folder, and two processes doing the same work on one store. A fault is survived when
every check holds and no committed row is lost. Bad inputs: each must exit 2 with exactly one
line on stderr, no traceback, and no model load unless only a load can find it (the catalogue:
tests/support/bad_inputs.py). At the end it
counts the records holding NaN or infinity in every store it wrote and the CLI runs that printed
a traceback: both must be 0. About 5 minutes on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

try:  # the fault helpers the tests share: the package tests.support, found from the repository root
    from tests.support import bad_inputs as B
    from tests.support import faults as F
except ModuleNotFoundError as e:
    if e.name not in ("tests", "tests.support"):
        raise
    sys.exit("run it as a module from the repository root: python -m bench.reliability_report")


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3, help="perplexity SIGKILL runs, one per seeded kill point")
    ap.add_argument("--no-mauve", action="store_true", help="skip the MAUVE generation kill (the slowest, ~1 min)")
    ap.add_argument("--keep", type=Path, default=None, help="keep the scratch folder here (stores, outputs)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="evalcore-faults-")) if args.keep is None else args.keep
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        print(f"scratch folder {work}; clean perplexity run ...", flush=True)
        ref = F.reference_perplexity(work / "ref")
        jobs = [(f"kill{s}", lambda d, s=s: F.perplexity_sigkill(d, ref, seed=s)) for s in range(args.seeds)]
        if not args.no_mauve:
            jobs.append(("mauve", F.mauve_sigkill))
        jobs += [(dmg, lambda d, dmg=dmg: F.corrupt_store(d, ref, dmg)) for dmg in F.DAMAGES]
        jobs += [("full", lambda d: F.disk_full(d, ref)), ("ro", lambda d: F.read_only(d, ref)),
                 ("two", lambda d: F.two_processes(d, ref)), ("nan", lambda d: F.non_finite_record(d, ref)),
                 ("locked", lambda d: F.locked_store(d, ref)), ("weights", F.corrupt_converted_weights)]
        outcomes = []
        for name, job in jobs:
            t = time.perf_counter()
            o = job(work / name)
            outcomes.append((o, time.perf_counter() - t))
            print(f"  {o.fault}: {'skipped' if o.skipped else 'survived' if o.survived else 'FAILED'} "
                  f"({time.perf_counter() - t:.0f} s)", flush=True)

        print("\n## Faults\n")
        print(_row(["fault", "survived", "rows stored at the fault", "rows lost", "checks", "seconds", "detail"]))
        print(_row(["---"] * 7))
        for o, sec in outcomes:
            held = sum(o.checks.values())
            checks = f"{held}/{len(o.checks)}" + ("" if held == len(o.checks) else
                                                  " (failed: " + ", ".join(k for k, v in o.checks.items() if not v) + ")")
            print(_row([o.fault, "skipped: " + o.skipped if o.skipped else "yes" if o.survived else "**NO**",
                        "-" if o.rows_before is None else str(o.rows_before), str(o.rows_lost), checks, f"{sec:.0f}",
                        o.detail.replace(str(work), "$TMP").replace("|", "/")]))

        print("\n## Bad inputs (exit 2, one stderr line, no traceback; no model load unless the check needs one)\n")
        print(_row(["input", "ok", "exit", "stderr lines", "seconds", "message"]))
        print(_row(["---"] * 6))
        bad_ok = 0
        for i, case in enumerate(B.BAD_INPUTS):
            run, problem = B.run_bad_input(case, work / "bad" / str(i))
            bad_ok += problem is None
            msg = (problem or F.stderr_lines(run.err)[0].removeprefix("evalcore: error: ")).replace(str(work), "$TMP")
            print(_row([case.name, "yes" if problem is None else "**NO**", str(run.rc), str(len(F.stderr_lines(run.err))),
                        f"{run.seconds:.1f}", msg[:110].replace("|", "/")]))

        injected = [o for o, _ in outcomes if not o.skipped]
        survived = sum(o.survived for o in injected)
        lost = sum(o.rows_lost for o in injected)
        non_finite = F.non_finite_stored(work)
        print(f"\nfaults injected {len(injected)}, survived {survived}; rows lost {lost}; "
              f"skipped {len(outcomes) - len(injected)}; bad inputs tried {len(B.BAD_INPUTS)}, handled {bad_ok}; "
              f"non-finite values stored {non_finite}; tracebacks {len(F.TRACEBACKS)}; "
              f"{time.perf_counter() - t0:.0f} s in all")
        for args_ in F.TRACEBACKS:
            print(f"  traceback: evalcore {args_}")
        return 0 if (survived == len(injected) and lost == 0 and bad_ok == len(B.BAD_INPUTS) and not non_finite
                     and not F.TRACEBACKS) else 1
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
