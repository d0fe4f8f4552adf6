"""A built-in tiny Llama checkpoint: config, random weights (safetensors) and a tokenizer trained
locally with the ``tokenizers`` library. No network, no model hub.

It lets the server start on any machine in seconds (``--model-path tiny``) and gives the tests a
real text-in, text-out model. Outputs are meaningless; they are deterministic for a given seed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

# Small enough to serve on two CPU cores, shaped like a real Llama: grouped-query attention,
# head_dim 16, and a hidden size that the fused kernel's 16-byte accesses divide.
TINY_LLAMA = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "head_dim": 16,
    "vocab_size": 512,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-05,
    "rope_theta": 10000.0,
    "hidden_act": "silu",
    "tie_word_embeddings": False,
    "torch_dtype": "float32",
    "bos_token_id": 1,
    "eos_token_id": 2,
    "attention_bias": False,
    "mlp_bias": False,
}
# The same architecture at about 1B parameters (same tokenizer): for benchmarks where the tiny
# model's step times, all host overhead on a GPU, would misstate what a real model pays.
LLAMA_1B_SHAPE = {**TINY_LLAMA, "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
                  "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128,
                  "torch_dtype": "bfloat16"}
# Llama-3-8B's layers (7B parameters outside the vocabulary): decode steps long enough on one GPU
# that the scheduler's host work hides behind them, unlike the 1B shape's.
LLAMA_8B_SHAPE = {**LLAMA_1B_SHAPE, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                  "num_attention_heads": 32}
# SGLang shards the vocabulary in units of 64 rows per rank: a checkpoint for TP = 3 pads it
# past the tokenizer's (zero rows, never predicted) to a multiple of 3 x 64.
VOCAB_PADDING = 64
# The tiny model with head counts, MLP width and vocabulary that divide by 3: TP = 3. Its KV cache
# holds 2 KB per token and rank in fp32 (small real models hold more), so SGLang's per-token
# bookkeeping (about 40 bytes, outside its memory budget) stays small beside a default-sized pool.
TINY_LLAMA_TP3 = {**TINY_LLAMA, "hidden_size": 192, "intermediate_size": 384, "num_hidden_layers": 4,
                  "num_attention_heads": 6, "num_key_value_heads": 6, "head_dim": 32, "vocab_size": 576}
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>"]  # ids 0, 1, 2, as the config says
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
# The tokenizer's training text: enough English for a few hundred merges.
_CORPUS = """
The quick brown fox jumps over the lazy dog. A tensor parallel server splits every layer across
several GPUs; each rank computes a partial sum and an all-reduce adds them together. Token
splitting cuts a batch in two so that the communication of one half overlaps the computation of
the other half. Deterministic requests return the same tokens every time they are sent, whatever
else the server is doing. The capital of France is Paris. Once upon a time there was a small
model that answered every question with random words. Hello, my name is. What is the weather
like today? Write a short poem about the sea. One, two, three, four, five, six, seven, eight,
nine, ten. The user asked a question and the assistant wrote an answer.
"""
SEED = 1234
_FORMAT_VERSION = 2  # bump when the files written change in a way the spec above does not show


def spec_digest(config: dict = TINY_LLAMA) -> str:
    """Changes whenever anything that shapes the checkpoint changes, so caches never go stale."""
    blob = json.dumps([config, SPECIAL_TOKENS, CHAT_TEMPLATE, _CORPUS, SEED, _FORMAT_VERSION])
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def cache_root() -> Path:
    from sglang_tokenweave.models.cache import cache_root as models_cache_root

    return models_cache_root()


def tiny_model_path(config: dict = TINY_LLAMA) -> Path:
    """Path of the tiny checkpoint (or of ``config``, a shape of it), written on first use
    (atomically: safe under concurrency)."""
    target = cache_root() / f"tiny-llama-{spec_digest(config)}"
    if (target / "model.safetensors").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-llama-", dir=target.parent))
    try:
        write_tiny_model(staging, config)
        try:
            staging.rename(target)
        except OSError:  # another process won the race; its copy is identical
            pass
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def write_tiny_model(folder: Path, config: dict = TINY_LLAMA, lm_head_scale: float = 4.0,
                     successor_strength: float = 0.0) -> None:
    """Write a checkpoint of ``config`` (``TINY_LLAMA`` or a larger shape of it) with random
    weights; ``lm_head_scale`` > 4 makes the token distributions peakier.

    ``successor_strength`` > 0 gives every ordinary token a fixed successor (a permutation) and
    adds the token's embedding, times the strength, to its successor's output row. The model then
    predicts the successor with a margin over the rest, as a trained model predicts its confident
    tokens: the successor's logit gains ``successor_strength * cos * sqrt(hidden)`` standard
    deviations of the random logits (cos: between the final hidden state and the token's
    embedding). Scaling the output alone cannot do that: it scales the logits' rounding noise with
    their gaps, so near-ties stay as frequent. 0 (the default) writes the same weights as before
    the option existed."""
    tokens = TINY_LLAMA["vocab_size"]
    if config["vocab_size"] < tokens or config["vocab_size"] % VOCAB_PADDING:
        raise ValueError(f"the tokenizer is trained for a vocabulary of {tokens}: the model's vocabulary must "
                         f"be that, or padded past it to a multiple of {VOCAB_PADDING}")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    (folder / "generation_config.json").write_text(
        json.dumps({"bos_token_id": 1, "eos_token_id": 2, "do_sample": False})
    )
    _write_tokenizer(folder)
    _write_weights(folder, config, lm_head_scale, successor_strength)


def _write_tokenizer(folder: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_LLAMA["vocab_size"],
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    assert tokenizer.get_vocab_size() <= TINY_LLAMA["vocab_size"]
    # Llama-style: every encoded text starts with <s> (the chat template writes its own).
    bos = ("<s>", tokenizer.token_to_id("<s>"))
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                             special_tokens=[bos])
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": "<s>",
                "eos_token": "</s>",
                "unk_token": "<unk>",
                "add_bos_token": True,
                "model_max_length": TINY_LLAMA["max_position_embeddings"],
                "chat_template": CHAT_TEMPLATE,
            },
            indent=2,
        )
    )
    (folder / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"})
    )


def _write_weights(folder: Path, c: dict, lm_head_scale: float, successor_strength: float) -> None:
    import torch
    from safetensors.torch import save_file

    dtype = getattr(torch, c["torch_dtype"])
    hidden, inter, vocab = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    q_size = c["num_attention_heads"] * c["head_dim"]
    kv_size = c["num_key_value_heads"] * c["head_dim"]
    gen = torch.Generator().manual_seed(SEED)

    def rand(*shape):  # scaled so activations stay O(1) through the layers
        return (torch.randn(*shape, generator=gen) / shape[-1] ** 0.5).to(dtype).contiguous()

    def norm_weight():  # not all ones: a fused norm that drops the weight must fail the tests
        return (1.0 + 0.1 * torch.randn(hidden, generator=gen)).to(dtype).contiguous()

    tensors = {"model.embed_tokens.weight": torch.randn(vocab, hidden, generator=gen).to(dtype)}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        tensors.update(
            {
                p + "input_layernorm.weight": norm_weight(),
                p + "self_attn.q_proj.weight": rand(q_size, hidden),
                p + "self_attn.k_proj.weight": rand(kv_size, hidden),
                p + "self_attn.v_proj.weight": rand(kv_size, hidden),
                p + "self_attn.o_proj.weight": rand(hidden, q_size),
                p + "post_attention_layernorm.weight": norm_weight(),
                p + "mlp.gate_proj.weight": rand(inter, hidden),
                p + "mlp.up_proj.weight": rand(inter, hidden),
                p + "mlp.down_proj.weight": rand(hidden, inter),
            }
        )
    tensors["model.norm.weight"] = norm_weight()
    tensors["lm_head.weight"] = rand(vocab, hidden) * lm_head_scale  # peakier logits than uniform noise
    tokens = TINY_LLAMA["vocab_size"]
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        tensors[name][tokens:] = 0  # padding rows (if any): logit 0, far below the real tokens' best
    if successor_strength:
        raised = _successor_rows(tensors["model.embed_tokens.weight"][:tokens], successor_strength * lm_head_scale)
        tensors["lm_head.weight"][:tokens] += raised.to(dtype)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})


def _successor_rows(embed, strength: float):
    """Output rows that raise each ordinary token's successor: row ``successor_of(t)`` is
    ``strength * embed[t] / sqrt(hidden)``. Special tokens neither have nor are successors."""
    import torch

    vocab, hidden = embed.shape
    rows = torch.zeros(vocab, hidden)
    rows[_successors(vocab)] = embed[len(SPECIAL_TOKENS):].float() * (strength / hidden**0.5)
    return rows


def successor_of(token: int, vocab: int = TINY_LLAMA["vocab_size"]) -> int:
    """The token that ``successor_strength`` favours after ``token`` (an ordinary token)."""
    return int(_successors(vocab)[token - len(SPECIAL_TOKENS)])


def _successors(vocab: int):
    """Entry i: the successor of ordinary token ``len(SPECIAL_TOKENS) + i``; a fixed permutation."""
    import torch

    first = len(SPECIAL_TOKENS)
    return torch.randperm(vocab - first, generator=torch.Generator().manual_seed(SEED + 1)) + first


if __name__ == "__main__":
    print(tiny_model_path())
