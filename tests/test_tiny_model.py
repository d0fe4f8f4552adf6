"""The built-in tiny checkpoint: written locally, loadable, and the same every time."""

import json

import torch

from safetensors.torch import load_file
from transformers import AutoTokenizer

from sglang_tokenweave import tiny_model


def test_checkpoint_is_complete_and_consistent(tmp_path):
    tiny_model.write_tiny_model(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    weights = load_file(str(tmp_path / "model.safetensors"))
    assert weights["model.embed_tokens.weight"].shape == (config["vocab_size"], config["hidden_size"])
    assert len([k for k in weights if k.endswith("q_proj.weight")]) == config["num_hidden_layers"]
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path))
    ids = tokenizer("The quick brown fox")["input_ids"]
    assert ids[0] == config["bos_token_id"]
    assert max(ids) < config["vocab_size"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == "The quick brown fox"
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                         add_generation_prompt=True)
    assert chat.endswith("<|assistant|>\n")


def test_weights_are_reproducible(tmp_path):
    tiny_model.write_tiny_model(tmp_path / "a")
    tiny_model.write_tiny_model(tmp_path / "b")
    a, b = (load_file(str(tmp_path / d / "model.safetensors")) for d in ("a", "b"))
    assert a.keys() == b.keys()
    assert all((a[k] == b[k]).all() for k in a)


def test_cache_is_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("SGLANG_TOKENWEAVE_CACHE", str(tmp_path))
    first = tiny_model.tiny_model_path()
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert tiny_model.tiny_model_path() == first
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp
    assert first.parent == tmp_path


def test_successor_strength_leaves_every_other_weight_and_favours_each_tokens_successor(tmp_path):
    tiny_model.write_tiny_model(tmp_path / "plain")
    tiny_model.write_tiny_model(tmp_path / "succ", successor_strength=2.0)
    plain, succ = (load_file(str(tmp_path / d / "model.safetensors")) for d in ("plain", "succ"))
    assert all((plain[k] == succ[k]).all() for k in plain if k != "lm_head.weight")
    assert not (plain["lm_head.weight"] == succ["lm_head.weight"]).all()
    embed = succ["model.embed_tokens.weight"].float()
    first = len(tiny_model.SPECIAL_TOKENS)
    # A hidden state aligned with a token's embedding scores that token's successor highest.
    favoured = (embed[first:] @ succ["lm_head.weight"].float().T).argmax(-1)
    expected = [tiny_model.successor_of(t) for t in range(first, embed.shape[0])]
    assert (favoured == torch.tensor(expected)).float().mean() > 0.95
    assert sorted(expected) == list(range(first, embed.shape[0]))  # a permutation of ordinary tokens
    assert (plain["lm_head.weight"][:first] == succ["lm_head.weight"][:first]).all()  # no special successor
