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


def test_tp3_shape_divides_by_three_and_has_its_own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SGLANG_TOKENWEAVE_CACHE", str(tmp_path))
    path = tiny_model.tiny_model_path(tiny_model.TINY_LLAMA_TP3)
    assert path != tiny_model.tiny_model_path()
    config = json.loads((path / "config.json").read_text())
    assert config == tiny_model.TINY_LLAMA_TP3
    for key in ("num_attention_heads", "num_key_value_heads", "intermediate_size"):
        assert config[key] % 3 == 0, key
    assert config["vocab_size"] % (3 * tiny_model.VOCAB_PADDING) == 0  # SGLang's vocabulary shards
    assert config["num_attention_heads"] * config["head_dim"] == config["hidden_size"]
    weights = load_file(str(path / "model.safetensors"))
    assert weights["model.layers.0.self_attn.q_proj.weight"].shape == (config["hidden_size"], config["hidden_size"])
    tokens = tiny_model.TINY_LLAMA["vocab_size"]
    for name in ("model.embed_tokens.weight", "lm_head.weight"):  # rows past the tokenizer: zero
        assert weights[name].shape[0] == config["vocab_size"]
        assert (weights[name][tokens:] == 0).all() and (weights[name][:tokens] != 0).any(dim=1).all()


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
