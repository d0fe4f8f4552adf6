"""A GGUF file to a bf16 safetensors checkpoint, with transformers' GGUF loader (which uses the
``gguf`` package to read and dequantise the tensors).

transformers builds the tokenizer of a GGUF with the begin token as its end token too (for
SmolLM2: eos ``<|im_start|>``, id 1, while the GGUF and the model config say id 2,
``<|im_end|>``), so chat replies would run on past the end of the turn. The end token written
here is the GGUF's own (the config's ``eos_token_id``), in the tokenizer and the generation config.
"""

from __future__ import annotations

import errno
import importlib.util
import json
from pathlib import Path

from sglang_tokenweave.models import ModelError


def end_token_fixes(eos_token_id: int, tokenizer_eos_id: int | None, vocab: list[str] | dict[str, int]) -> dict:
    """Tokenizer attributes to set so that its end token is the model's ``eos_token_id``
    (nothing if it already is). The pad token follows it, as in the original SmolLM2 release."""
    if tokenizer_eos_id == eos_token_id:
        return {}
    tokens = vocab if isinstance(vocab, list) else {i: t for t, i in vocab.items()}
    try:
        token = tokens[eos_token_id]
    except (IndexError, KeyError):
        raise ModelError(f"the model's end token id {eos_token_id} is not in its vocabulary") from None
    return {"eos_token": token, "pad_token": token}


def convert_gguf(gguf: Path, out: Path, show_progress: bool) -> None:
    """Write the checkpoint of ``gguf`` into the directory ``out``."""
    missing = [name for name in ("gguf", "accelerate") if importlib.util.find_spec(name) is None]
    if missing:  # transformers' GGUF loader needs both (the package's pins bring them)
        raise ModelError(f"converting {gguf.name} needs the {' and '.join(missing)} package(s): "
                         f"pip install {' '.join(missing)}")
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not show_progress:
        transformers.utils.logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.bfloat16)
    except Exception as e:  # noqa: BLE001 - the loader raises many kinds on a bad file
        if _is_disk_full(e):
            raise OSError(errno.ENOSPC, "No space left on device") from None
        raise ModelError(f"cannot read {gguf} as a GGUF model ({type(e).__name__}: {e})") from None
    eos = model.config.eos_token_id
    eos = eos[0] if isinstance(eos, list) and eos else eos
    if isinstance(eos, int):  # a GGUF without an end token keeps what transformers made
        vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        for attribute, value in end_token_fixes(eos, tokenizer.eos_token_id, vocab).items():
            setattr(tokenizer, attribute, value)
        model.generation_config.eos_token_id = eos
        model.generation_config.pad_token_id = eos
    tokenizer.model_max_length = model.config.max_position_embeddings
    try:
        model.save_pretrained(str(out))
        tokenizer.save_pretrained(str(out))
    except OSError:
        raise  # the cache reports it (no space, no permission)
    except Exception as e:  # noqa: BLE001 - safetensors reports a full disk as its own error type
        if _is_disk_full(e):
            raise OSError(errno.ENOSPC, str(e)) from None
        raise
    _drop_wordpiece_cleanup(out)


def _drop_wordpiece_cleanup(out: Path) -> None:
    """transformers writes ``clean_up_tokenization_spaces: true`` for GGUF tokenizers and then warns
    on every load that this WordPiece step would damage a BPE tokenizer's output; it is off here."""
    path = out / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config["clean_up_tokenization_spaces"] = False
    path.write_text(json.dumps(config, indent=2) + "\n")


def _is_disk_full(e: BaseException) -> bool:
    return getattr(e, "errno", None) == errno.ENOSPC or "No space left on device" in str(e)
