"""SmolLM2's converted checkpoint: the shape the issue names, the end token fixed, the chat
template kept, and a greedy answer from transformers itself (the reference the servers follow)."""

import json
from pathlib import Path

import pytest

from sglang_tokenweave.models.cache import MARKER
from sglang_tokenweave.models.catalog import SMOLLM2


@pytest.fixture(scope="module")
def folder(smollm2_path):
    return Path(smollm2_path)


def test_config_is_smollm2_135m(folder):
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    shape = {k: config[k] for k in ("num_hidden_layers", "hidden_size", "num_attention_heads",
                                    "num_key_value_heads", "vocab_size", "tie_word_embeddings")}
    assert shape == {"num_hidden_layers": 30, "hidden_size": 576, "num_attention_heads": 9,
                     "num_key_value_heads": 3, "vocab_size": 49152, "tie_word_embeddings": True}
    assert config["dtype"] == "bfloat16" and config["eos_token_id"] == 2
    assert json.loads((folder / MARKER).read_text())["gguf_sha256"] == SMOLLM2.gguf_sha256


def test_end_token_is_im_end_in_the_tokenizer_and_the_generation_config(folder):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    assert (tokenizer.eos_token, tokenizer.eos_token_id) == ("<|im_end|>", 2)
    assert tokenizer.pad_token_id == 2 and tokenizer.bos_token_id == 1
    assert json.loads((folder / "generation_config.json").read_text())["eos_token_id"] == 2
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False,
                                         add_generation_prompt=True)
    assert chat.startswith("<|im_start|>system\n") and chat.endswith("<|im_end|>\n<|im_start|>assistant\n")


def test_transformers_answers_the_capital_of_france_and_stops(folder):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                        add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=40, do_sample=False)[0, ids["input_ids"].shape[1]:].tolist()
    assert "Paris" in tokenizer.decode(out)
    assert out[-1] == 2 and len(out) < 40  # ended by <|im_end|>, not by the length limit
