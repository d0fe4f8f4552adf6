"""A benchmark cut short goes on where it stopped (``--resume``), and only where the comparison
stays fair: same arguments, code and machine."""

import json

import pytest

from sglang_tokenweave.bench import checkpoint, gpu_memory, runner
from sglang_tokenweave.bench.checkpoint import Checkpoint, CheckpointMismatch, keyed, unkeyed
from sglang_tokenweave.bench.sides import Launch, forced_on_both, ours_side, stock_side

V2_LINE = ("[2026-12-01 10:00:00 TP0] All Reduce config: symmetric_memory = 64.03 MB, local_buffer = 0.01 MB, "
           "can_multicast = False")


class FakeServer:
    def __init__(self, module, args, log_path, env=None, base_env=None, start_timeout=None):
        pass

    def log_text(self):
        return V2_LINE

    def kill(self):
        pass


@pytest.fixture
def fake_servers(monkeypatch):
    monkeypatch.setattr(runner, "ServerProcess", FakeServer)
    monkeypatch.setattr(gpu_memory, "used_mib", lambda: None)


IDENT = {"arguments": ["--repeats", "2"], "code": {"sha": "abc", "dirty": False}, "card": "cpu", "machine": "m1"}


def make_runner(tmp_path):
    launch = Launch([], forced_on_both("cpu"), environ={})
    return runner.Runner(launch, [stock_side("cpu"), ours_side([])], 1, "cpu", tmp_path / "logs")


class Stop(Exception):
    pass


def test_a_resumed_run_skips_the_finished_runs_and_reruns_the_one_cut_off(fake_servers, tmp_path):
    point = Checkpoint(tmp_path / "c.json", IDENT)
    measured = {}

    def measure(repeat, side, server):
        if (repeat, side.name) == (1, "stock"):
            raise Stop  # the call's time limit, in the middle of a run
        measured[(repeat, side.name)] = float(repeat)

    first = make_runner(tmp_path)
    point.start(False, first, lambda saved: pytest.fail("nothing to restore"))
    with pytest.raises(Stop):
        first.run(2, measure, after_run=point.saver(first, lambda: keyed(measured)))
    # saved after each complete run: repeat 0 both sides, then ours of repeat 1 (A B, B A)
    saved = json.loads(point.path.read_text())
    assert [(r["repeat"], r["side"]) for r in saved["runner"]["runs"]] == [(0, "stock"), (0, "ours"), (1, "ours")]

    later = {}
    second = make_runner(tmp_path)
    Checkpoint(tmp_path / "c.json", IDENT).start(True, second, lambda s: later.update(unkeyed(s)))
    assert later == measured
    ran = []
    second.run(2, lambda repeat, side, server: ran.append((repeat, side.name)))
    assert ran == [(1, "stock")]  # only the run cut off, whole
    plan = second.record()["plan"]
    assert [(r["repeat"], r["side"], r["sitting"]) for r in plan] == [
        (0, "stock", 0), (0, "ours", 0), (1, "ours", 0), (1, "stock", 1)]


@pytest.mark.parametrize("field,value", [("arguments", ["--repeats", "3"]), ("code", {"sha": "abd", "dirty": False}),
                                         ("card", "NVIDIA H200"), ("machine", "m2")])
def test_resuming_with_other_arguments_code_or_machine_is_refused_by_name(fake_servers, tmp_path, field, value):
    Checkpoint(tmp_path / "c.json", IDENT).save(make_runner(tmp_path).state(), [])
    with pytest.raises(CheckpointMismatch, match=f"checkpoint's {field} differ"):
        Checkpoint(tmp_path / "c.json", {**IDENT, field: value}).start(True, make_runner(tmp_path), print)


def test_without_resume_an_old_checkpoint_is_removed_and_nothing_restored(fake_servers, tmp_path, capsys):
    point = Checkpoint(tmp_path / "c.json", IDENT)
    point.save(make_runner(tmp_path).state(), [])
    point.start(False, make_runner(tmp_path), lambda s: pytest.fail("restored"))
    assert not point.path.exists()
    point.start(True, make_runner(tmp_path), lambda s: pytest.fail("restored"))
    assert "no checkpoint" in capsys.readouterr().out


def test_identity_ignores_resume_and_digests_the_machine(monkeypatch):
    monkeypatch.setattr(checkpoint.shutil, "which", lambda name: None)
    a = checkpoint.identity(["--repeats", "3", "--resume"], "cpu")
    assert a["arguments"] == ["--repeats", "3"] and a["card"] == "cpu"
    assert len(a["machine"]) == 16 and a == checkpoint.identity(["--repeats", "3"], "cpu")


def test_tuple_keys_survive_json_infinite_rates_included():
    samples = {("ours", "chat", float("inf"), 1): {"x": 1.5}, (0.02, 0): {"y": [1, 2]}}
    assert unkeyed(json.loads(json.dumps(keyed(samples)))) == samples
