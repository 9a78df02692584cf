"""First use on a cold cache: a conversion killed part-way, then two ranks converting the same
model at once; and a cache folder that cannot be written. Each test has an EVALCORE_CACHE of its
own, empty; they convert SmolLM2 once in all (the other tests use the converted weights the
session's model fixtures load)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evalcore import models
from tests.support import faults as F

ROOT = Path(__file__).resolve().parents[2]
CONVERTED = models.converted_dir(models.resolve_spec(F.MODEL)).name


def test_a_conversion_killed_part_way_then_two_ranks_on_that_cache_convert_once(tmp_path):
    """Both first-use stories on one empty cache, for one conversion (SmolLM2's, ~11 s: the
    slow step of a first use, and each story needs one that starts from nothing):

    1. SIGKILL during the conversion leaves its temporary folder `.NAME.tmpPID` and no
       converted folder.
    2. The next start is the issue's example: torchrun with two ranks that both need the
       converted weights. One converts under the lock and removes the folder the killed
       conversion left; the other waits and reads the finished folder.

    The cache must be empty, not the session's converted one: with the weights already there
    nothing converts, so there is nothing to kill and no race."""
    cache = tmp_path / "cache"
    args = ["perplexity", "--model", F.MODEL, "--text-file", "/etc/hostname", "--store", str(tmp_path / "k.sqlite"),
            "--out", str(tmp_path / "k.json")]
    p = F.popen(args, extra_env={"EVALCORE_CACHE": str(cache)})
    deadline = time.time() + 300
    tmps: list[Path] = []
    while time.time() < deadline and p.poll() is None:
        tmps = [t for t in (cache / "models").glob(f".{CONVERTED}.tmp*") if any(t.iterdir())]
        if tmps:
            break
        time.sleep(0.05)
    assert tmps, "the conversion never started writing its temporary folder"
    os.kill(p.pid, signal.SIGKILL)
    p.communicate()
    stale = tmps[0]
    assert stale.exists() and not (cache / "models" / CONVERTED).exists()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "evalcore",
           "-v", "hellaswag", "--model", F.MODEL, "--limit", "8", "--store", str(tmp_path / "s.sqlite"),
           "--out", str(tmp_path / "o.json")]
    r = subprocess.run(cmd, cwd=ROOT, env={**F.env(), "EVALCORE_CACHE": str(cache)}, capture_output=True, text=True,
                       timeout=600, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stderr.count(f"converted {F.MODEL} to safetensors") == 1  # one rank converted, the other waited
    assert not stale.exists() and not list((cache / "models").glob(f".{CONVERTED}.tmp*"))
    assert json.loads((tmp_path / "o.json").read_text())["n"] == 8
    assert models.is_complete(cache / "models" / CONVERTED)


def test_read_only_empty_cache_fails_before_converting(tmp_path):
    """A cache folder nobody can write: one line, from the check made before the conversion starts."""
    cache = tmp_path / "ro"
    cache.mkdir()
    cache.chmod(0o555)
    try:
        ok, pre, how = F.read_only_runner(cache)
        if not ok:
            pytest.skip(how)
        run = F.cli(["perplexity", "--model", F.MODEL, "--text-file", "/etc/hostname", "--store",
                     str(tmp_path / "s.sqlite"), "--out", str(tmp_path / "o.json")],
                    extra_env={"EVALCORE_CACHE": str(cache)}, preexec_fn=pre)
    finally:
        cache.chmod(0o755)
    assert F.one_line_error(run) is None, run.err
    assert "cannot write to the evalcore cache folder" in run.err and "read-only" in run.err
