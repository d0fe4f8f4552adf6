"""Naming the child process whose end takes the server down."""

import logging
import os
from types import SimpleNamespace

import pytest

from sglang_tokenweave.glue import child_exits


@pytest.mark.parametrize(
    "exitcode, words",
    [
        (-9, "scheduler_1 (pid 42) was killed by SIGKILL (the kernel's OOM killer"),
        (-11, "scheduler_1 (pid 42) was killed by SIGSEGV"),
        (1, "scheduler_1 (pid 42) exited with code 1"),
    ],
)
def test_describe_exit(exitcode, words):
    assert child_exits.describe_exit("scheduler_1", 42, exitcode).startswith(words)


def test_only_failed_children_are_reported_and_only_when_the_tree_goes(monkeypatch, caplog):
    procs = [SimpleNamespace(pid=10 + i, exitcode=code) for i, code in enumerate((None, -9, 0, 1))]
    monkeypatch.setattr(child_exits, "_watched", [])
    child_exits.watch_children(None, object(), procs, ["scheduler_0", "scheduler_1", "scheduler_2"])
    assert [name for name, _ in child_exits._watched] == ["scheduler_0", "scheduler_1", "scheduler_2"]
    child_exits.watch_children(None, object(), procs[3:], None)
    with caplog.at_level(logging.ERROR, logger="sglang_tokenweave"):
        assert child_exits.report_failed_children(os.getpid() + 1) is None  # another tree
        assert child_exits.report_failed_children(os.getpid(), include_parent=False) is None
        assert not caplog.records
        assert child_exits.report_failed_children(os.getpid()) is None
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "scheduler_1 (pid 11) was killed by SIGKILL" in messages[0]
    assert "process_0 (pid 13) exited with code 1" in messages[1]


def test_a_broken_process_handle_never_blocks_the_shutdown(monkeypatch):
    class Broken:
        pid = 1

        @property
        def exitcode(self):
            raise OSError("no such child")

    monkeypatch.setattr(child_exits, "_watched", [("scheduler_0", Broken())])
    assert child_exits.report_failed_children(os.getpid()) is None
