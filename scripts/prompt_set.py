"""The committed set of realistic chat prompts (benchmarks/prompts/chat_prompts.jsonl) that
benchmarks serving text on a real model send instead of random token ids or random words.

Each line is {"id", "category", "messages", "max_tokens"}: messages are chat turns (an optional
system turn, then user and assistant alternating, the last one a user turn), max_tokens a
sensible reply length for the prompt. ``prompt_text`` applies a model's chat template, so a
benchmark can send the result to /generate; ``sample_prompts`` draws a seeded workload of any size.

    python scripts/prompt_set.py [--path FILE] [--tokenizer MODEL_DIR]

prints the set's summary (counts per category, prompt lengths in words, and in tokens with
--tokenizer). Pure Python: no sglang import; transformers only for --tokenizer.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "prompts" / "chat_prompts.jsonl"
CATEGORIES = ("qa", "howto", "code", "math", "summarize", "rewrite", "creative", "extract", "multiturn")
MIN_MAX_TOKENS, MAX_MAX_TOKENS = 32, 512
# A prompt of at least this many words counts as long (a passage to summarise, code to review).
LONG_WORDS = 200
PERCENTILES = (10, 50, 90, 99)


@dataclass(frozen=True)
class Prompt:
    id: str
    category: str
    messages: tuple[tuple[str, str], ...]  # (role, content) turns
    max_tokens: int

    def chat_messages(self) -> list[dict[str, str]]:
        """The turns as chat-template / OpenAI messages."""
        return [{"role": role, "content": content} for role, content in self.messages]

    @property
    def words(self) -> int:
        return sum(len(content.split()) for _, content in self.messages)

    @property
    def is_long(self) -> bool:
        return self.words >= LONG_WORDS


def roles_error(roles: list[str]) -> str | None:
    """Why this sequence of roles is not a chat turn order, or None if it is one."""
    first = 1 if roles[:1] == ["system"] else 0
    if len(roles) == first:
        return "no user turn"
    for i, role in enumerate(roles[first:]):
        expected = "user" if i % 2 == 0 else "assistant"
        if role != expected:
            return f"messages[{first + i}] is {role!r}, expected {expected!r}"
    if roles[-1] != "user":
        return "the last turn is not a user turn"
    return None


def parse_prompt(obj: object) -> Prompt:
    """One line's object as a Prompt; ValueError naming the field that is wrong."""
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    extra = set(obj) - {"id", "category", "messages", "max_tokens"}
    if extra:
        raise ValueError(f"unknown fields {sorted(extra)}")
    pid, category, messages, max_tokens = (obj.get(k) for k in ("id", "category", "messages", "max_tokens"))
    if not isinstance(pid, str) or not pid:
        raise ValueError("id: must be a non-empty string")
    if category not in CATEGORIES:
        raise ValueError(f"category: {category!r} is not one of {CATEGORIES}")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not (
            MIN_MAX_TOKENS <= max_tokens <= MAX_MAX_TOKENS):
        raise ValueError(f"max_tokens: {max_tokens!r} is not an integer in [{MIN_MAX_TOKENS}, {MAX_MAX_TOKENS}]")
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages: must be a non-empty list")
    turns = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or set(m) != {"role", "content"}:
            raise ValueError(f"messages[{i}]: must be an object with exactly role and content")
        if not isinstance(m["content"], str) or not m["content"].strip():
            raise ValueError(f"messages[{i}].content: must be a non-empty string")
        turns.append((m["role"], m["content"]))
    why = roles_error([role for role, _ in turns])
    if why:
        raise ValueError(f"messages: roles {[r for r, _ in turns]}: {why}")
    return Prompt(pid, category, tuple(turns), max_tokens)


def load_prompts(path: str | Path | None = None) -> list[Prompt]:
    """The prompts of ``path`` (default: the committed set), in file order. A malformed line,
    or an id used twice, raises ValueError naming the file, the line and the field."""
    path = Path(path) if path is not None else DEFAULT_PATH
    prompts, lines = [], {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                prompt = parse_prompt(json.loads(line))
            except ValueError as e:  # json.JSONDecodeError is a ValueError too
                raise ValueError(f"{path}:{number}: {e}") from None
            if prompt.id in lines:
                raise ValueError(f"{path}:{number}: id: {prompt.id!r} already used on line {lines[prompt.id]}")
            lines[prompt.id] = number
            prompts.append(prompt)
    if not prompts:
        raise ValueError(f"{path}: no prompts")
    return prompts


def set_digest(path: str | Path | None = None) -> str:
    """A short digest of the prompt file: results record it, since any edit to the set changes
    every workload drawn from it."""
    path = Path(path) if path is not None else DEFAULT_PATH
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def sample_prompts(n: int, seed: int, prompts: list[Prompt] | None = None) -> list[Prompt]:
    """``n`` prompts drawn by ``seed``: the set in a seeded shuffled order, cycled when n is
    larger than the set (every prompt then comes up n // len or n // len + 1 times)."""
    if n < 0:
        raise ValueError(f"n: {n} is negative")
    prompts = load_prompts() if prompts is None else prompts
    if not prompts:
        raise ValueError("prompts: empty")
    order = list(range(len(prompts)))
    random.Random(seed).shuffle(order)
    return [prompts[order[i % len(order)]] for i in range(n)]


def prompt_text(prompt: Prompt, tokenizer) -> str:
    """The prompt as one string in ``tokenizer``'s chat template, ending where the reply starts:
    the text to send to /generate."""
    return tokenizer.apply_chat_template(prompt.chat_messages(), tokenize=False, add_generation_prompt=True)


def prompt_ids(prompt: Prompt, tokenizer) -> list[int]:
    """``prompt_text`` as token ids, to send as input_ids. Encoded without special tokens: the
    template writes its own BOS, and tokenizers that also add one would double it."""
    return list(tokenizer(prompt_text(prompt, tokenizer), add_special_tokens=False)["input_ids"])


def percentiles(values: list[int]) -> dict[str, int]:
    """Nearest-rank percentiles and the extremes."""
    ordered = sorted(values)
    out = {"min": ordered[0]}
    for p in PERCENTILES:
        out[f"p{p}"] = ordered[max(0, -(-p * len(ordered) // 100) - 1)]
    out["max"] = ordered[-1]
    return out


def summary(prompts: list[Prompt], tokenizer=None) -> dict:
    """Counts per category and length distributions (words; tokens too with ``tokenizer``)."""
    counts = Counter(p.category for p in prompts)
    out = {
        "prompts": len(prompts),
        "categories": {c: counts[c] for c in CATEGORIES if counts[c]},
        "long_prompts": sum(p.is_long for p in prompts),
        "multi_turn": sum(any(role == "assistant" for role, _ in p.messages) for p in prompts),
        "with_system": sum(p.messages[0][0] == "system" for p in prompts),
        "words": percentiles([p.words for p in prompts]),
        "max_tokens": percentiles([p.max_tokens for p in prompts]),
    }
    if tokenizer is not None:
        out["tokens"] = percentiles([len(prompt_ids(p, tokenizer)) for p in prompts])
    return out


def format_summary(s: dict) -> str:
    lines = [f"{s['prompts']} prompts, {s['long_prompts']} long (>= {LONG_WORDS} words, "
             f"{100 * s['long_prompts'] / s['prompts']:.0f}%), {s['multi_turn']} with earlier assistant turns, "
             f"{s['with_system']} with a system turn"]
    lines += [f"  {c:<10} {n:4d}" for c, n in s["categories"].items()]
    for key in ("words", "tokens", "max_tokens"):
        if key in s:
            lines.append(f"{key + ':':<11} " + "  ".join(f"{k} {v}" for k, v in s[key].items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--path", default=str(DEFAULT_PATH), help="a prompt file (default: the committed set)")
    parser.add_argument("--tokenizer", help="a model folder or name: also report prompt lengths in tokens")
    args = parser.parse_args(argv)
    tokenizer = None
    if args.tokenizer:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    print(f"{args.path} (digest {set_digest(args.path)})")
    print(format_summary(summary(load_prompts(args.path), tokenizer)))


if __name__ == "__main__":
    main()
