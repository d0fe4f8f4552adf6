"""Malformed requests that SGLang's request splitting fails on become ValueErrors (HTTP 400)."""

import pytest

from sglang_tokenweave.glue.request_errors import as_bad_request


class Obj:
    lora_path = []


@pytest.mark.parametrize("error", [IndexError("list index out of range"), TypeError("unhashable"), KeyError("x")])
def test_client_errors_become_bad_requests(error):
    def original(obj, i):
        raise error

    with pytest.raises(ValueError, match="malformed request") as raised:
        as_bad_request(original, Obj(), 1)
    assert raised.value.__cause__ is error


def test_everything_else_passes_through():
    assert as_bad_request(lambda obj, i: obj.lora_path, Obj(), 0) == []
    with pytest.raises(RuntimeError):
        as_bad_request(lambda obj: (_ for _ in ()).throw(RuntimeError("bug")), Obj())
