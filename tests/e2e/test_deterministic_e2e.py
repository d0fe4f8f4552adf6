"""End to end on CPU: deterministic requests on a real server (tiny model) at TP=1 and TP=2.

The same deterministic prompts (mixed lengths, greedy and temperature 0.8 with seeds) are sent
alone, at concurrency 16 and in bursts among non-deterministic traffic, three times each: the
token ids (and logprobs) must be identical every time. A test-only switch perturbs the fast
path's logits so that verification must roll back: outputs still equal the unperturbed ones,
and the metrics count the rollbacks. Every KV slot is free again afterwards.
"""

import concurrent.futures as cf
import itertools
import json
import random
import re

import openai
import pytest
import requests
from deterministic_client import (
    PROMPTS, SAMPLING, det_params, generate, generate_stream, metric, scheduler_reports, wait_for_idle_pool,
)
from serving import Server

from sglang_tokenweave.determinism.metrics import PASS_PHASES

pytestmark = pytest.mark.e2e

# Small W and B so that short outputs go through several windows and shared passes.
DET_ARGS = ["--enable-deterministic-requests", "--enable-metrics", "--deterministic-window", "4",
            "--deterministic-verify-rows", "4"]
PERTURB = ["--deterministic-test-perturb-logits", "3.0"]
LOOKAHEAD = ["--deterministic-lookahead-blocks", "2"]
CASES = list(itertools.product(range(len(PROMPTS)), range(len(SAMPLING))))
JSON = {"content-type": "application/json"}


def _start(tmp_path_factory, args, env=None):
    return Server(args, tmp_path_factory.mktemp("server") / "server.log", env)


def _case_params(case, **extra):
    prompt_index, sampling_index = case
    return PROMPTS[prompt_index], det_params(*SAMPLING[sampling_index], **extra)


def _det_output(server, case, logprobs=False):
    prompt, params = _case_params(case)
    extra = {"return_logprob": True, "top_logprobs_num": 3} if logprobs else {}
    body = generate(server, prompt, params, **extra)
    if not logprobs:
        return body["output_ids"]
    meta = body["meta_info"]
    return body["output_ids"], meta["output_token_logprobs"], meta["output_top_logprobs"]


def _noise(server, i):
    rng = random.Random(i)
    params = {"max_new_tokens": rng.randint(1, 24), "temperature": rng.choice([0.0, 0.7, 1.0]), "ignore_eos": True}
    return generate(server, f"noise {i} " * rng.randint(1, 30), params)["output_ids"]


def _solo(server):
    return {case: _det_output(server, case) for case in CASES}


def _concurrent(server, with_noise):
    """Every case once, at concurrency 16, optionally interleaved with non-deterministic traffic."""
    with cf.ThreadPoolExecutor(16) as pool:
        noise = [pool.submit(_noise, server, i) for i in range(24)] if with_noise else []
        det = {case: pool.submit(_det_output, server, case) for case in CASES}
        for f in noise:
            f.result()
        return {case: f.result() for case, f in det.items()}


def _burst(server):
    """A burst of non-deterministic requests with the deterministic ones in the middle of it."""
    with cf.ThreadPoolExecutor(32) as pool:
        before = [pool.submit(_noise, server, 100 + i) for i in range(16)]
        det = {case: pool.submit(_det_output, server, case) for case in CASES}
        after = [pool.submit(_noise, server, 200 + i) for i in range(16)]
        for f in before + after:
            f.result()
        return {case: f.result() for case, f in det.items()}


def _assert_identical_under_load(server, reference):
    assert _concurrent(server, with_noise=False) == reference, "concurrency 16"
    for run in range(3):
        assert _concurrent(server, with_noise=True) == reference, f"concurrency 16 with other traffic, run {run}"
        assert _burst(server) == reference, f"burst, run {run}"


def _greedy(server, i):
    params = {"max_new_tokens": 12, "temperature": 0.0, "ignore_eos": True}
    return generate(server, f"plain request {i} " * (i + 1), params)["output_ids"]


def _assert_pool_idle(server):
    pool = wait_for_idle_pool(server)
    assert pool is not None and pool["free_tokens"] == pool["total_tokens"], pool


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """TP=1, deterministic requests on, no perturbation, no lookahead: the reference server."""
    server = _start(tmp_path_factory, DET_ARGS + ["--deterministic-lookahead-blocks", "1"])
    yield server
    server.kill()


@pytest.fixture(scope="module")
def reference(server):
    return _solo(server)


# Class-scoped servers: each lives only while its class's tests run.
@pytest.fixture(scope="class")
def servers(tmp_path_factory, server, reference):
    """A perturbed TP=1 server that decodes up to 2 blocks ahead of verification, the
    unperturbed reference (no lookahead) and reference logprobs."""
    logprobs = _det_output(server, (2, 2), logprobs=True)
    perturbed = _start(tmp_path_factory, DET_ARGS + PERTURB + LOOKAHEAD)
    yield perturbed, reference, logprobs
    perturbed.kill()


@pytest.fixture(scope="class")
def normal_loop_server(tmp_path_factory):
    """Perturbed, with SGLang's normal (non-overlapped) scheduler loop and the default lookahead."""
    server = _start(tmp_path_factory, DET_ARGS + PERTURB + ["--disable-overlap-schedule"])
    yield server
    server.kill()


@pytest.fixture(scope="class")
def tp2_server(tmp_path_factory):
    server = _start(tmp_path_factory, ["--tp", "2", *DET_ARGS, *PERTURB], env={"SGLANG_TEST_RETRACT": "1"})
    yield server
    server.kill()


@pytest.fixture(scope="class")
def plain(tmp_path_factory):
    """The overlay without the feature."""
    plain = _start(tmp_path_factory, [])
    yield plain
    plain.kill()


class TestTp1:
    def test_solo_outputs_repeat(self, server, reference):
        assert all(len(ids) == 20 for ids in reference.values())
        assert _solo(server) == reference
        # different seeds really sample differently
        assert reference[(1, 1)] != reference[(1, 2)]

    def test_unperturbed_fast_path_rarely_rolls_back(self, server, reference):
        # The fast path samples each token with the verifier's (seed, position) key; a wrong
        # position would make nearly every sampled (temperature 0.8) token mismatch.
        verified, rolled_back = metric(server, "tokens_verified"), metric(server, "tokens_rolled_back")
        assert verified > 0 and rolled_back <= 0.1 * verified

    def test_identical_at_concurrency_and_in_bursts(self, server, reference):
        _assert_identical_under_load(server, reference)
        assert metric(server, "verification_passes") > 0
        total = metric(server, "verification_seconds")
        phases = [metric(server, f"verification_{phase}_seconds") for phase in PASS_PHASES]
        assert total > 0 and all(p > 0 for p in phases) and sum(phases) == pytest.approx(total, rel=1e-6)
        assert metric(server, "tokens_verified") > 0
        # Every deterministic request is prefilled alone and then decodes on the fast path.
        assert metric(server, "isolated_prefills") >= metric(server, "requests")
        assert metric(server, "fast_path_steps") > 0 and metric(server, "sampler_seconds") > 0
        assert metric(server, "requests") >= len(CASES) * 8  # the reference and the 7 loaded runs at least
        _assert_pool_idle(server)

    def test_logprobs_identical_under_load(self, server):
        case = (2, 1)
        solo = _det_output(server, case, logprobs=True)
        assert len(solo[1]) == 20 and len(solo[2]) == 20 and all(len(top) == 3 for top in solo[2])
        with cf.ThreadPoolExecutor(16) as pool:
            noise = [pool.submit(_noise, server, 300 + i) for i in range(12)]
            runs = [pool.submit(_det_output, server, case, True) for _ in range(4)]
            assert all(f.result() == solo for f in runs)
            [f.result() for f in noise]

    def test_streaming_shows_the_same_tokens(self, server, reference):
        prompt, params = _case_params((1, 1))
        assert _stream_ids(generate_stream(server, prompt, params)) == reference[(1, 1)]

    def test_stop_token_finishes_on_committed_tokens(self, server, reference):
        stop = reference[(0, 1)][5]
        prompt, params = _case_params((0, 1), stop_token_ids=[stop])
        params["ignore_eos"] = False
        body = generate(server, prompt, params)
        first = reference[(0, 1)].index(stop)
        out = body["output_ids"]
        # ends at the stop token, or earlier at an end-of-sequence token of the tokenizer
        assert 1 <= len(out) <= first + 1 and out == reference[(0, 1)][: len(out)]
        assert body["meta_info"]["finish_reason"]["type"] == "stop"
        assert body["meta_info"]["finish_reason"]["matched"] == out[-1]
        # The overlap loop found the fast path's stop one step late: that step's slot is free too.
        _assert_pool_idle(server)

    def test_openai_seed_and_choices(self, server):
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused")
        ask = dict(model="tiny", prompt="Once upon a time", max_tokens=12, temperature=0.8, seed=11,
                   extra_body={"deterministic": True, "ignore_eos": True})
        one = client.completions.create(**ask).choices[0].text
        two = client.completions.create(n=2, **ask).choices
        again = client.completions.create(n=2, **ask).choices
        assert [c.text for c in two] == [c.text for c in again]
        assert two[0].text == one  # choice 0 keeps the request's own seed
        assert two[0].text != two[1].text  # every choice has its own seed
        chat = dict(model="tiny", messages=[{"role": "user", "content": "Hello"}], max_tokens=10, temperature=0.8,
                    seed=5, extra_body={"deterministic": True, "ignore_eos": True})
        text = client.chat.completions.create(**chat).choices[0].message.content
        streamed = "".join(c.choices[0].delta.content or ""
                           for c in client.chat.completions.create(stream=True, **chat) if c.choices)
        assert streamed == text

    @pytest.mark.parametrize("path, body, param", [
        ("/generate", {"text": "x", "sampling_params": {"deterministic": "yes"}}, "sampling_params.deterministic"),
        ("/generate", {"text": "x", "sampling_params": {"deterministic": True, "regex": "a+"}},
         "sampling_params.regex"),
        ("/generate", {"text": "x", "stream": True, "sampling_params": {"deterministic": 1}},
         "sampling_params.deterministic"),
        ("/v1/completions", {"model": "m", "prompt": "x", "deterministic": True, "frequency_penalty": 1.0},
         "frequency_penalty"),
        ("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "x"}],
                                  "deterministic": True, "response_format": {"type": "json_object"}},
         "response_format"),
    ])
    def test_invalid_requests_get_400(self, server, path, body, param):
        r = server.post(path, body)
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["param"] == param and param in error["message"]

    def test_top_level_flag_is_deterministic_for_every_item(self, server, reference):
        """The field at the top level of /generate, where SGLang users put rid or stream."""
        cases = [(1, 1), (2, 2)]
        params = [_case_params(case)[1] for case in cases]
        for p in params:
            p.pop("deterministic")
        prompt, _ = _case_params(cases[0])
        one = generate(server, prompt, params[0], deterministic=True)
        assert one["output_ids"] == reference[cases[0]]
        batch = generate(server, [_case_params(c)[0] for c in cases], params, deterministic=True)
        assert [item["output_ids"] for item in batch] == [reference[c] for c in cases]

    def test_put_and_json_escaped_bodies_are_checked(self, server, reference):
        prompt, params = _case_params((1, 1))
        params.pop("deterministic")
        escaped = json.dumps({"text": prompt, "deterministic": True, "sampling_params": params})
        escaped = escaped.replace('"deterministic"', '"\\u0064eterministic"').encode()
        for method in ("POST", "PUT"):
            r = requests.request(method, server.url + "/generate", data=escaped, timeout=600, headers=JSON)
            assert r.status_code == 200 and r.json()["output_ids"] == reference[(1, 1)], r.text
        smuggled = (b'{"text": "x", "sampling_params": {"max_new_tokens": 0, "regex": "a+", '
                    b'"custom_params": {"tokenweave\\u005fdeterministic": true}}}')
        r = requests.put(server.url + "/generate", data=smuggled, timeout=600, headers=JSON)
        assert r.status_code == 400 and r.json()["error"]["param"] == \
            "sampling_params.custom_params.tokenweave_deterministic", r.text

    def test_stop_regex_finishes_on_committed_tokens(self, server, reference):
        prompt, params = _case_params((2, 1))
        full = reference[(2, 1)]
        # the text of two tokens from the middle (plain ASCII, so it reads the same in context)
        start, text = next((i, t) for i in range(8, 16) if (t := _detokenize(server, full[i:i + 2])).isascii()
                           and len(t.strip()) >= 2)
        regex = re.escape(text.strip()).replace("\\ ", " ")
        body = generate(server, prompt, {**params, "stop_regex": regex, "no_stop_trim": True})
        out = body["output_ids"]
        # where SGLang's own check stops: the first committed token whose text matches
        first = next(k for k in range(1, len(full) + 1) if re.search(regex, _detokenize(server, full[:k])))
        assert first <= start + 2 < len(full) and out == full[:first]
        assert body["meta_info"]["finish_reason"] == {"type": "stop", "matched": regex}
        _assert_pool_idle(server)

    @pytest.mark.parametrize("extra, param", [
        ({"sampling_params": {"deterministic": True, "custom_params": 5}}, "sampling_params.custom_params"),
        ({"deterministic": True, "lora_path": "adapter"}, "lora_path"),
        ({"deterministic": True, "image_data": "https://example.com/a.png"}, "image_data"),
        ({"deterministic": True, "input_embeds": [[0.5] * 128]}, "input_embeds"),
        ({"deterministic": True, "sampling_params": {"deterministic": False}}, "deterministic"),
    ])
    def test_unsupported_combinations_get_400(self, server, extra, param):
        r = server.post("/generate", {"text": "x", **extra})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == param
        assert server.get("/health").status_code == 200

    def test_overlap_scheduler_and_sampling_kernel_are_reported(self, server):
        for process in scheduler_reports(server):
            features = process["features"]
            assert features["deterministic_requests"]["active"] is True
            # the default kernel, resolved for a server without CUDA
            assert "sampling kernel torch (auto on --device cpu)" in features["deterministic_requests"]["reason"]
            assert features["overlap_schedule"]["active"] is True
            assert "deterministic" in features["overlap_schedule"]["reason"]


class TestTp1Perturbed:
    """Fast-path logits perturbed: every window mismatches often, so rollbacks run constantly;
    with 2 blocks of lookahead, the committed tokens are still those of the reference server."""

    def test_outputs_equal_the_unperturbed_reference(self, servers):
        server, reference, logprobs = servers
        assert _solo(server) == reference
        _assert_identical_under_load(server, reference)
        assert _det_output(server, (2, 2), logprobs=True) == logprobs
        for process in scheduler_reports(server):  # no CUDA graphs on CPU: the passes ran eagerly
            path = process["features"]["deterministic_verify_graph"]
            assert path["active"] is False and "no prefill CUDA graph" in path["reason"], path
        assert metric(server, "tokens_rolled_back") > 0
        assert metric(server, "rollback_events") > 0
        _assert_pool_idle(server)

    def test_stream_never_shows_a_rolled_back_token(self, servers):
        server, reference, _ = servers
        prompt, params = _case_params((2, 1))
        chunks = generate_stream(server, prompt, params)
        seen = []
        for chunk in chunks:
            ids = chunk["output_ids"]
            # chunks are either cumulative or incremental; either way they only ever grow the output
            seen = ids if ids[: len(seen)] == seen and len(ids) >= len(seen) else seen + ids
            assert reference[(2, 1)][: len(seen)] == seen
        assert seen == reference[(2, 1)]


class TestTp1PerturbedNormalLoop:
    """The overlap scheduler switched off by the user: the same committed tokens."""

    def test_outputs_equal_the_unperturbed_reference(self, normal_loop_server, reference):
        server = normal_loop_server
        assert _solo(server) == reference
        _assert_identical_under_load(server, reference)
        assert metric(server, "rollback_events") > 0
        _assert_pool_idle(server)


class TestTp2PerturbedWithRetraction:
    """TP=2, perturbed fast path, and SGLang's test switch that retracts a running request every
    few steps: restarted deterministic requests regenerate exactly what they had."""

    def test_identical_with_rollbacks_and_restarts(self, tp2_server):
        server = tp2_server
        reference = _solo(server)
        assert all(len(ids) == 20 for ids in reference.values())
        _assert_identical_under_load(server, reference)
        assert metric(server, "rollback_events") > 0
        assert metric(server, "restarts") > 0
        ranks = sorted(p["tp_rank"] for p in scheduler_reports(server))
        assert ranks == [0, 1]
        _assert_pool_idle(server)


class TestFeatureOff:
    def test_deterministic_request_refused_with_reason(self, plain):
        r = plain.post("/generate", {"text": "x", "sampling_params": {"deterministic": True}})
        assert r.status_code == 400
        assert "--enable-deterministic-requests" in r.json()["error"]["message"]
        ok = plain.post("/generate", {"text": "x", "sampling_params": {"deterministic": False, "max_new_tokens": 2}})
        assert ok.status_code == 200, ok.text

    def test_other_requests_unchanged_by_the_feature(self, plain, server):
        assert [_greedy(server, i) for i in range(6)] == [_greedy(plain, i) for i in range(6)]


def _detokenize(server, ids):
    r = server.post("/v1/detokenize", {"model": "tiny", "tokens": ids, "skip_special_tokens": False})
    assert r.status_code == 200, r.text
    return r.json()["text"]


def _stream_ids(chunks):
    """The output ids a stream delivered (chunks carry cumulative or incremental ids)."""
    seen = []
    for chunk in chunks:
        ids = chunk["output_ids"]
        seen = ids if len(ids) >= len(seen) and ids[: len(seen)] == seen else seen + ids
    return seen


class TestLoad:
    """About 1,000 mixed requests at concurrency 64: 10% deterministic, half streamed, some
    cancelled by the client mid-stream."""

    REQUESTS = 1000

    def _one(self, server, i, reference):
        import requests

        rng = random.Random(i)
        stream = rng.random() < 0.5
        if i % 10 == 0:
            case = CASES[(i // 10) % len(CASES)]
            prompt, params = _case_params(case)
            ids = _stream_ids(generate_stream(server, prompt, params)) if stream else \
                generate(server, prompt, params)["output_ids"]
            return "det", ids == reference[case]
        params = {"max_new_tokens": rng.randint(1, 32), "temperature": rng.choice([0.0, 1.0]), "ignore_eos": True}
        body = {"text": f"load {i} " * rng.randint(1, 20), "sampling_params": params, "stream": stream}
        if stream and rng.random() < 0.05:  # the client goes away after the first chunk
            with requests.post(server.url + "/generate", json=body, stream=True, timeout=600) as r:
                assert r.status_code == 200
                next(r.iter_lines())
            return "cancelled", True
        r = requests.post(server.url + "/generate", json=body, timeout=600)
        return "plain", r.status_code == 200 and "error" not in r.text[-200:]

    def test_mixed_load(self, server, reference):
        with cf.ThreadPoolExecutor(64) as pool:
            results = list(pool.map(lambda i: self._one(server, i, reference), range(self.REQUESTS)))
        kinds = {kind for kind, _ in results}
        assert {"det", "plain", "cancelled"} <= kinds
        failed = [(i, kind) for i, (kind, ok) in enumerate(results) if not ok]
        assert not failed, failed[:10]
        assert server.get("/health_generate").status_code == 200
        _assert_pool_idle(server)
