"""End to end on CPU: a real SGLang server started through our launcher, on the tiny model,
at TP=1 and TP=2 (gloo), answering SGLang's native and OpenAI APIs with the overlay active
in every scheduler process."""

import openai
import pytest
from transformers import AutoTokenizer

from sglang_tokenweave.tiny_model import tiny_model_path

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", params=[1, 2], ids=["tp1", "tp2"])
def server(request, start_server):
    return start_server(["--tp", str(request.param)]), request.param


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(str(tiny_model_path()))


def test_overlay_reports_itself_from_every_tp_process(server):
    srv, tp = server
    status = srv.get("/tokenweave/status").json()
    schedulers = [p for p in status["processes"] if p["role"] == "scheduler"]
    assert sorted(p["tp_rank"] for p in schedulers) == list(range(tp))
    assert len({p["pid"] for p in schedulers}) == tp  # separate (spawned) processes
    for p in schedulers:
        assert p["tp_size"] == tp
        assert "sglang.srt.managers.scheduler.Scheduler.__init__" in p["hooks"]
        # the CPU hooks ran in the child, or SGLang could not have served on CPU at all
        assert "sglang.srt.layers.rotary_embedding.base.RotaryEmbedding.__init__" in p["hooks"]


def test_generate_text(server, tokenizer):
    srv, _ = server
    prompt = "The capital of France is"
    r = srv.post("/generate", {"text": prompt, "sampling_params": {"max_new_tokens": 12, "temperature": 0,
                                                                   "ignore_eos": True}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["meta_info"]["completion_tokens"] == 12
    assert len(body["output_ids"]) == 12
    assert body["meta_info"]["prompt_tokens"] == len(tokenizer(prompt)["input_ids"])
    assert body["text"] == tokenizer.decode(body["output_ids"], skip_special_tokens=True)
    assert body["meta_info"]["finish_reason"]["type"] == "length"


def test_generate_batch_of_token_ids(server):
    srv, _ = server
    prompts = [[1, 40, 41, 42], [1, 100, 101, 102, 103, 104, 105]]
    r = srv.post("/generate", {"input_ids": prompts, "sampling_params": {"max_new_tokens": 5,
                                                                         "temperature": 0, "ignore_eos": True}})
    assert r.status_code == 200, r.text
    outs = r.json()
    assert [o["meta_info"]["prompt_tokens"] for o in outs] == [4, 7]
    assert all(len(o["output_ids"]) == 5 for o in outs)


def test_greedy_is_reproducible(server):
    srv, _ = server
    body = {"text": "Once upon a time", "sampling_params": {"max_new_tokens": 8, "temperature": 0}}
    first, second = (srv.post("/generate", body).json()["output_ids"] for _ in range(2))
    assert first == second


def test_openai_completions_with_requests(server):
    srv, _ = server
    r = srv.post("/v1/completions", {"model": "tiny", "prompt": "Hello, my name is", "max_tokens": 6,
                                     "temperature": 0, "ignore_eos": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "text_completion"
    assert body["usage"]["completion_tokens"] == 6
    assert isinstance(body["choices"][0]["text"], str)


def test_openai_chat_with_requests(server, tokenizer):
    srv, _ = server
    messages = [{"role": "user", "content": "Write a short poem about the sea."}]
    r = srv.post("/v1/chat/completions", {"model": "tiny", "messages": messages, "max_tokens": 7,
                                          "temperature": 0, "ignore_eos": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert body["usage"]["completion_tokens"] == 7
    expected_prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                    return_dict=True)["input_ids"]
    assert body["usage"]["prompt_tokens"] == len(expected_prompt)


def test_openai_client(server):
    srv, _ = server
    client = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused")
    completion = client.completions.create(model="tiny", prompt="One, two, three,", max_tokens=4,
                                           temperature=0, extra_body={"ignore_eos": True})
    assert completion.usage.completion_tokens == 4
    chat = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hello"}],
                                          max_tokens=5, temperature=0, extra_body={"ignore_eos": True})
    assert chat.usage.completion_tokens == 5
    assert chat.choices[0].finish_reason == "length"
    stream = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}],
                                            max_tokens=5, temperature=0, stream=True,
                                            extra_body={"ignore_eos": True})
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert len("".join(pieces)) > 0
