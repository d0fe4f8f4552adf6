"""The scheduler refuses prompts that would end it: no tokens, token ids outside the vocabulary."""

import dataclasses

import pytest

from sglang_tokenweave.glue import prompt_guard
from sglang_tokenweave.glue.prompt_guard import prompt_error, refuse_invalid_prompt


@pytest.mark.parametrize("ids, words", [
    ([], "no tokens"), ([1, 512], "token id 512 is outside the vocabulary [0, 512)"),
    ([-1, 5], "token id -1"), ([2**63 - 1], "outside"),
])
def test_prompts_that_cannot_run(ids, words):
    error = prompt_error(ids, 512)
    assert error.startswith("input_ids:") and words in error


def test_prompts_that_can_run():
    assert prompt_error([0, 511], 512) is None
    assert prompt_error(None, 512) is None  # input_embeds


@dataclasses.dataclass
class Tokenized:
    input_ids: list
    input_embeds: list | None = None
    mm_inputs: dict | None = None


class Scheduler:
    class model_config:
        vocab_size = 512


def test_the_hook_serves_or_aborts(monkeypatch):
    aborted, served = [], []
    monkeypatch.setattr(prompt_guard, "abort_request", lambda s, r, message: aborted.append((r, message)))
    good, bad = Tokenized([1, 2]), Tokenized([99999999])
    for request in (good, bad, Tokenized([], input_embeds=[[0.5]])):
        refuse_invalid_prompt(lambda s, r: served.append(r), Scheduler(), request)
    assert served == [good, served[1]] and served[1].input_embeds is not None
    assert aborted == [(bad, "input_ids: token id 99999999 is outside the vocabulary [0, 512)")]
