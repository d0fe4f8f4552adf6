"""Pure helpers of the benchmark scripts: the recorded command line and the scaled model copy."""

import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import bench_determinism  # noqa: E402
from bench_command import recorded_command  # noqa: E402

from sglang_tokenweave.tiny_model import tiny_model_path  # noqa: E402


def test_recorded_command_keeps_the_run_and_drops_the_machine():
    script = str(Path(__file__).resolve().parent.parent / "scripts" / "bench_x.py")
    argv = ["--tp", "4", "--out-dir", "/somewhere/out", "--model-path", "/cache/models/tiny",
            "--tokenweave-config=/data/tuning/h100.json", "--extra-args", "--dtype bfloat16"]
    assert recorded_command(script, argv) == (
        "python scripts/bench_x.py --tp 4 --model-path tiny --tokenweave-config=h100.json "
        "--extra-args '--dtype bfloat16'")


def test_scaled_copy_scales_only_the_output_projection():
    source = tiny_model_path()
    copy = bench_determinism.scaled_copy(str(source), 8.0)
    before, after = load_file(str(source / "model.safetensors")), load_file(str(copy / "model.safetensors"))
    config_same = (copy / "config.json").read_text() == (source / "config.json").read_text()
    shutil.rmtree(copy)
    assert set(before) == set(after)
    assert torch.equal(after["lm_head.weight"], before["lm_head.weight"] * 8.0)
    assert all(torch.equal(after[k], before[k]) for k in before if k != "lm_head.weight")
    assert config_same


def test_scaled_copy_refuses_a_model_without_lm_head(tmp_path):
    from safetensors.torch import save_file

    save_file({"model.embed_tokens.weight": torch.zeros(4, 2)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(SystemExit, match="no lm_head.weight"):
        bench_determinism.scaled_copy(str(tmp_path), 2.0)
