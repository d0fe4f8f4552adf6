"""The committed prompt set (benchmarks/prompts/chat_prompts.jsonl) and its loader: the file's
shape, seeded sampling, chat templating through a tokenizer built here (no network)."""

import json
import sys
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import prompt_set  # noqa: E402
from prompt_set import (  # noqa: E402
    CATEGORIES, DEFAULT_PATH, LONG_WORDS, Prompt, load_prompts, prompt_ids, prompt_text, sample_prompts,
    set_digest, summary)


@pytest.fixture(scope="module")
def prompts():
    return load_prompts()


def test_the_file_parses_line_by_line_with_unique_ids(prompts):
    lines = [json.loads(line) for line in DEFAULT_PATH.read_text(encoding="utf-8").splitlines()]
    ids = [p.id for p in prompts]
    assert len(prompts) == len(lines) >= 250
    assert len(set(ids)) == len(ids)
    assert ids == [line["id"] for line in lines]
    assert all(p.id.startswith(p.category + "-") for p in prompts)
    assert DEFAULT_PATH.stat().st_size < 400_000


def test_every_category_has_at_least_15_prompts(prompts):
    counts = Counter(p.category for p in prompts)
    assert set(counts) == set(CATEGORIES)
    assert min(counts.values()) >= 15, counts


def test_roles_alternate_from_user_and_end_with_a_user_turn(prompts):
    for p in prompts:
        roles = [role for role, _ in p.messages]
        if roles[0] == "system":
            roles = roles[1:]
        assert roles == ["user", "assistant"] * (len(roles) // 2) + ["user"], p.id
        assert all(content.strip() for _, content in p.messages), p.id
    # the multi-turn category really has earlier assistant turns, and only a few prompts elsewhere
    multi = [p for p in prompts if p.category == "multiturn"]
    assert sum(any(r == "assistant" for r, _ in p.messages) for p in multi) >= 15


def test_lengths_vary_as_real_traffic_does(prompts):
    words = sorted(p.words for p in prompts)
    long = [p for p in prompts if p.words >= LONG_WORDS]
    assert len(long) >= 0.10 * len(prompts)
    assert 10 <= words[len(words) // 2] <= 60  # most prompts are short
    assert max(words) <= 600
    assert {p.category for p in long} >= {"summarize", "code"}
    assert all(32 <= p.max_tokens <= 512 for p in prompts)
    assert len({p.max_tokens for p in prompts}) >= 5


def test_sampling_is_deterministic_for_a_seed_and_covers_the_set(prompts):
    n = len(prompts)
    first = sample_prompts(n, seed=7)
    assert first == sample_prompts(n, seed=7)
    assert sorted(p.id for p in first) == sorted(p.id for p in prompts)  # a permutation
    assert [p.id for p in first] != [p.id for p in sample_prompts(n, seed=8)]
    assert sample_prompts(10, seed=7) == first[:10]


def test_sampling_more_than_the_set_cycles_its_shuffled_order(prompts):
    n = len(prompts)
    many = sample_prompts(2 * n + 5, seed=3, prompts=prompts)
    assert many[:n] == many[n:2 * n] and many[2 * n:] == many[:5]
    assert set(Counter(p.id for p in many).values()) == {2, 3}
    assert sample_prompts(0, seed=3, prompts=prompts) == []
    with pytest.raises(ValueError, match="n: -1"):
        sample_prompts(-1, seed=3, prompts=prompts)


def _write(tmp_path, rows):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


GOOD = {"id": "qa-1", "category": "qa", "messages": [{"role": "user", "content": "Why?"}], "max_tokens": 64}


@pytest.mark.parametrize("bad, message", [
    ({"category": "chitchat"}, "category"),
    ({"max_tokens": 4096}, "max_tokens"),
    ({"max_tokens": "64"}, "max_tokens"),
    ({"id": ""}, "id"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "user", "content": "  "}]}, r"messages\[0\].content"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}, "last turn"),
    ({"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}]}, r"messages\[0\]"),
    ({"messages": [{"role": "system", "content": "a"}]}, "no user turn"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}, r"messages\[1\]"),
    ({"extra": 1}, "unknown fields"),
])
def test_a_malformed_line_is_refused_naming_its_line_and_field(tmp_path, bad, message):
    path = _write(tmp_path, [GOOD, {**GOOD, "id": "qa-2", **bad}])
    with pytest.raises(ValueError, match=rf"prompts.jsonl:2: .*{message}"):
        load_prompts(path)


def test_a_reused_id_or_broken_json_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r":2: id: 'qa-1' already used on line 1"):
        load_prompts(_write(tmp_path, [GOOD, GOOD]))
    path = tmp_path / "broken.jsonl"
    path.write_text(json.dumps(GOOD) + "\n{not json\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"broken.jsonl:2: "):
        load_prompts(path)


def test_a_system_turn_is_kept_first(tmp_path):
    row = {**GOOD, "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]}
    (p,) = load_prompts(_write(tmp_path, [row]))
    assert p == Prompt("qa-1", "qa", (("system", "Be brief."), ("user", "Hi")), 64)
    assert p.chat_messages() == row["messages"]


# A ChatML-like template, as many instruct models have; it rejects turns out of order, as some do.
TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'system' and not loop.first %}{{ raise_exception('system not first') }}{% endif %}"
    "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture(scope="module")
def tokenizer(prompts):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1000, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([c for p in prompts[:40] for _, c in p.messages], trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   chat_template=TEMPLATE)


def test_every_prompt_renders_through_a_chat_template(prompts, tokenizer):
    for p in prompts:
        text = prompt_text(p, tokenizer)
        assert text.startswith("<s><|im_start|>" + p.messages[0][0] + "\n"), p.id
        assert text.endswith("<|im_end|>\n<|im_start|>assistant\n"), p.id
        at = 0
        for role, content in p.messages:  # every turn, in order
            at = text.index(f"<|im_start|>{role}\n{content}<|im_end|>", at) + 1
        ids = prompt_ids(p, tokenizer)
        assert ids.count(tokenizer.bos_token_id) == 1 and ids[0] == tokenizer.bos_token_id, p.id
        assert tokenizer.decode(ids) == text, p.id  # byte-level BPE round-trips any text


def test_summary_counts_the_set(prompts, tokenizer, capsys):
    s = summary(prompts, tokenizer)
    assert s["prompts"] == len(prompts) == sum(s["categories"].values())
    assert s["long_prompts"] == sum(p.words >= LONG_WORDS for p in prompts)
    for key in ("words", "tokens", "max_tokens"):
        values = list(s[key].values())
        assert values == sorted(values) and values[0] < values[-1], key
    assert s["tokens"]["max"] == max(len(prompt_ids(p, tokenizer)) for p in prompts)
    prompt_set.main([])
    printed = capsys.readouterr().out
    assert f"{len(prompts)} prompts" in printed and all(c in printed for c in CATEGORIES)
    assert set_digest() in printed


def test_the_digest_follows_the_file(tmp_path):
    a, b = _write(tmp_path, [GOOD]), tmp_path / "b.jsonl"
    b.write_text(json.dumps({**GOOD, "max_tokens": 65}) + "\n", encoding="utf-8")
    assert set_digest(a) == set_digest(a) != set_digest(b)
    assert len(set_digest()) == 12
