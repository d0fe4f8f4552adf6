"""End to end on CPU on a real trained model (SmolLM2-135M-Instruct, served as ``smollm2``).

- A chat completion answers "What is the capital of France?" with Paris (greedy) and ends on
  the end-of-turn token, well before ``max_tokens``.
- Ours (deterministic requests on) and stock SGLang, same flags, TP=1: identical greedy text
  on 20 fixed chat prompts, sent as one batch.
- Deterministic requests under mixed load (greedy and T = 0.8 with seeds, streamed, n = 2, among
  non-deterministic traffic): every one identical to its solo run; rollbacks counted.

One server at a time: stock answers first and is stopped, then ours starts for the module.
"""

import concurrent.futures as cf
import random

import openai
import pytest
from deterministic_client import generate, generate_stream, metric
from real_model import COMMON_ARGS, PROMPTS, STOCK_CPU_ARGS, STOCK_ENV, STOCK_LAUNCHER, chat_ids, greedy

pytestmark = pytest.mark.e2e

MAX_NEW_TOKENS = 24
# Small W and B so that 24-token outputs cross several windows and share verification passes.
DET_ARGS = ["--enable-deterministic-requests", "--enable-metrics", "--deterministic-window", "8",
            "--deterministic-verify-rows", "4"]


@pytest.fixture(scope="module")
def tokenizer(smollm2_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_path)


@pytest.fixture(scope="module")
def stock_outputs(start_server, smollm2_path, tokenizer):
    stock = start_server(["--model-path", smollm2_path, *COMMON_ARGS, *STOCK_CPU_ARGS], env=STOCK_ENV,
                         launcher=STOCK_LAUNCHER)
    try:
        return greedy(stock, chat_ids(tokenizer), MAX_NEW_TOKENS)
    finally:
        stock.kill()


@pytest.fixture(scope="module")
def server(start_server, stock_outputs):
    return start_server(["--model-path", "smollm2", *COMMON_ARGS, *DET_ARGS])


def test_chat_answers_paris_and_stops_at_the_end_of_the_turn(server):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused")
    reply = client.chat.completions.create(model="smollm2", temperature=0, max_tokens=64,
                                           messages=[{"role": "user", "content": "What is the capital of France?"}])
    choice = reply.choices[0]
    print(f"answer: {choice.message.content!r}, {reply.usage.completion_tokens} tokens")
    assert "Paris" in choice.message.content
    assert choice.finish_reason == "stop"
    assert reply.usage.completion_tokens <= 32  # ended by <|im_end|>, not by max_tokens


def test_greedy_text_identical_to_stock_sglang(server, stock_outputs, tokenizer):
    ours = greedy(server, chat_ids(tokenizer), MAX_NEW_TOKENS)
    assert len(ours) == len(stock_outputs) == len(PROMPTS)
    stopped = sum(o["meta_info"]["finish_reason"]["type"] == "stop" for o in stock_outputs)
    print(f"{stopped} of {len(PROMPTS)} stock answers ended on the end token within {MAX_NEW_TOKENS} tokens")
    assert "Paris" in stock_outputs[0]["text"]  # a trained model's answer, not noise
    for prompt, mine, theirs in zip(PROMPTS, ours, stock_outputs):
        assert mine["output_ids"], prompt
        assert (mine["text"], mine["output_ids"]) == (theirs["text"], theirs["output_ids"]), prompt


# ---- deterministic requests under mixed load

DET_PROMPTS = ["Write a short story about a robot who learns to paint.",
               "Explain how a bicycle works.",
               "List some tips for learning a new language."]
SAMPLING = [(0.0, None), (0.8, 1), (0.8, 424242)]
CASES = [(p, s) for p in range(len(DET_PROMPTS)) for s in range(len(SAMPLING))]
N2 = dict(temperature=0.8, seed=7, n=2)


def _text(tokenizer, prompt):
    return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                         tokenize=False)


def _params(case):
    temperature, seed = SAMPLING[case[1]]
    params = {"max_new_tokens": MAX_NEW_TOKENS, "temperature": temperature, "deterministic": True}
    if seed is not None:
        params["sampling_seed"] = seed
    return params


def _plain(server, tokenizer, case):
    return generate(server, _text(tokenizer, DET_PROMPTS[case[0]]), _params(case))["output_ids"]


def _streamed(server, tokenizer, case):
    seen = []
    for chunk in generate_stream(server, _text(tokenizer, DET_PROMPTS[case[0]]), _params(case)):
        ids = chunk["output_ids"]  # cumulative or incremental chunks: either way they only grow
        seen = ids if len(ids) >= len(seen) and ids[: len(seen)] == seen else seen + ids
    return seen


def _two_choices(server):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused")
    reply = client.completions.create(model="smollm2", prompt="Once upon a time, in a small village,",
                                      max_tokens=MAX_NEW_TOKENS, extra_body={"deterministic": True}, **N2)
    return [c.text for c in sorted(reply.choices, key=lambda c: c.index)]


def _noise(server, i):
    rng = random.Random(i)
    params = {"max_new_tokens": rng.randint(4, 32), "temperature": rng.choice([0.0, 0.7, 1.0])}
    return generate(server, rng.choice(PROMPTS) + " " * rng.randint(0, 3), params)["output_ids"]


def test_deterministic_requests_identical_to_solo_under_mixed_load(server, tokenizer):
    before = {name: metric(server, name) for name in ("tokens_verified", "tokens_rolled_back", "rollback_events")}
    solo = {case: _plain(server, tokenizer, case) for case in CASES}
    solo_choices = _two_choices(server)
    assert solo_choices[0] != solo_choices[1]  # each choice samples with its own seed
    assert solo[(1, 1)] != solo[(1, 2)]  # different seeds sample differently
    with cf.ThreadPoolExecutor(16) as pool:
        noise = [pool.submit(_noise, server, i) for i in range(12)]
        plain = {case: pool.submit(_plain, server, tokenizer, case) for case in CASES}
        streamed = {case: pool.submit(_streamed, server, tokenizer, case) for case in CASES}
        choices = [pool.submit(_two_choices, server) for _ in range(2)]
        noise += [pool.submit(_noise, server, 100 + i) for i in range(12)]
        for f in noise:
            f.result()
        mismatched = [("plain", c) for c, f in plain.items() if f.result() != solo[c]]
        mismatched += [("streamed", c) for c, f in streamed.items() if f.result() != solo[c]]
        mismatched += [("n=2", i) for i, f in enumerate(choices) if f.result() != solo_choices]
    counts = {name: metric(server, name) - before[name] for name in before}
    print(f"SmolLM2, W=8 B=4: {counts['tokens_verified']:.0f} tokens verified, {counts['tokens_rolled_back']:.0f} "
          f"rolled back in {counts['rollback_events']:.0f} rollbacks")
    assert not mismatched, mismatched
    assert counts["tokens_verified"] > 0
