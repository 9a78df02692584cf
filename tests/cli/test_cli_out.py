"""`--out`: a regular file is replaced atomically, anything else is written through and left as
it is, `-` is stdout. Each case runs the CLI on MAUVE features (no model to load), in this
process (`clirun.cli_in_process`: exit status, stdout and stderr at the descriptor level, as a
child's), and `--out -` also through the real entry point: nothing but the JSON reaches a
child's stdout, from its start-up on."""
from __future__ import annotations

import json
import os
import stat
import threading

import numpy as np
import pytest

from evalcore.cli.output import write_json
from evalcore.errors import EvalcoreError
from tests.support import faults as F


@pytest.fixture
def features(tmp_path) -> list[str]:
    rng = np.random.default_rng(0)
    np.save(tmp_path / "p.npy", rng.normal(size=(100, 8)))
    np.save(tmp_path / "q.npy", rng.normal(0.5, size=(100, 8)))
    return ["mauve", "--p-features", str(tmp_path / "p.npy"), "--q-features", str(tmp_path / "q.npy"), "--k", "4"]


def _node(path: str) -> tuple[int, int, int]:
    st = os.stat(path)
    return stat.S_IFMT(st.st_mode), st.st_rdev, st.st_ino


@pytest.mark.parametrize("target", ["/dev/null", "/dev/zero"])
def test_out_onto_a_device_writes_through_and_leaves_the_node(features, target):
    before = _node(target)
    run = F.cli_in_process([*features, "--out", target])
    assert run.rc == 0, run.err
    assert _node(target) == before and stat.S_ISCHR(before[0])


def test_out_onto_dev_full_is_one_line(features):
    run = F.cli_in_process([*features, "--out", "/dev/full"])
    assert F.one_line_error(run) is None and "No space left" in run.err, run.err
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


@pytest.mark.parametrize("out", ["-", "/dev/stdout", "/proc/self/fd/1"])
def test_out_to_stdout_keeps_stdout_json(features, out):
    run = F.cli_in_process([*features, "--out", out])
    assert run.rc == 0, run.err
    assert json.loads(run.out)["num_buckets"] == 4  # nothing but the JSON on stdout
    assert "MAUVE" in run.err  # the summary line went to stderr


def test_out_dash_through_the_real_entry_point_is_stdout_json_only(features):
    run = F.cli([*features, "--out", "-"])
    assert run.rc == 0, run.err
    assert json.loads(run.out)["num_buckets"] == 4
    assert "MAUVE" in run.err


def test_out_through_a_symlink_replaces_the_file_and_keeps_the_link(features, tmp_path):
    (tmp_path / "real.json").write_text("old")
    (tmp_path / "link.json").symlink_to(tmp_path / "real.json")
    run = F.cli_in_process([*features, "--out", str(tmp_path / "link.json")])
    assert run.rc == 0, run.err
    assert (tmp_path / "link.json").is_symlink()
    assert json.loads((tmp_path / "real.json").read_text())["num_buckets"] == 4


def test_out_through_a_symlink_to_a_device_leaves_the_device(features, tmp_path):
    (tmp_path / "sink").symlink_to("/dev/null")
    before = _node("/dev/null")
    run = F.cli_in_process([*features, "--out", str(tmp_path / "sink")])
    assert run.rc == 0, run.err
    assert _node("/dev/null") == before and (tmp_path / "sink").is_symlink()


def test_out_onto_a_fifo_writes_through(features, tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()))
    reader.start()
    run = F.cli_in_process([*features, "--out", str(fifo)])
    reader.join(timeout=60)
    assert run.rc == 0, run.err
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and json.loads(got[0])["num_buckets"] == 4


def test_non_finite_numbers_never_reach_the_json(tmp_path):
    with pytest.raises(EvalcoreError, match="non-finite"):
        write_json(tmp_path / "o.json", {"mauve": float("nan")})
    assert not (tmp_path / "o.json").exists()
