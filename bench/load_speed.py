"""Model load time: straight from the bundled GGUF vs the converted safetensors cache.

    python bench/load_speed.py [--models smollm2-135m gemma3-270m]

Both measured in this run, each in a fresh interpreter (imports excluded: timed from just
before the load call). Target: warm smollm2-135m under 3 s and >= 5x faster than GGUF.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

WARM = """
import time, torch, transformers, json
from evalcore.models import load_model, ensure_converted, resolve_spec
ensure_converted(resolve_spec({name!r}))
t = time.perf_counter(); lm = load_model({name!r}, device="cpu", dtype="float32"); dt = time.perf_counter() - t
print(json.dumps(dt))
"""
GGUF = """
import time, torch, transformers, json
from evalcore.models import load_gguf_direct, _gguf_path, resolve_spec
_gguf_path(resolve_spec({name!r}))  # chunks assembled + checked outside the timing
t = time.perf_counter(); load_gguf_direct({name!r}); dt = time.perf_counter() - t
print(json.dumps(dt))
"""


def timed(code: str) -> float:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma3-270m"])
    args = ap.parse_args()
    rows = {}
    for name in args.models:
        warm = min(timed(WARM.format(name=name)) for _ in range(2))
        gguf = timed(GGUF.format(name=name))
        rows[name] = {"gguf_s": round(gguf, 2), "warm_s": round(warm, 2), "speedup": round(gguf / warm, 1)}
        print(f"{name}: GGUF load {gguf:.1f}s, cached safetensors {warm:.2f}s -> {gguf / warm:.1f}x", flush=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
