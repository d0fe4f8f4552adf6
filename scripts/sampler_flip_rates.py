"""How often a sampled token changes when the logits change in their last bits.

A deterministic request's fast-path token is rolled back wherever the verifier, whose logits
differ from the fast path's by rounding, picks another token. This draws random logit rows
(``--vocab`` tokens, standard deviation ``--scales``), a copy of each with a relative error of
``--errors`` (Gaussian, per logit: the size of bf16 rounding differences), and counts the rows
whose token differs between the two, for
- ``greedy``: argmax;
- ``inverse_cdf``: one uniform per row, the first token whose running probability exceeds it
  (float64, in token order: the sampler before Gumbel-max);
- ``gumbel_max``: our sampler (``sampling.sample``, PyTorch path), the same (seed, position)
  keys for both copies.
Temperature ``--temperature`` for the sampled ones. ``effective_tokens``: the median of
1 / sum(p**2), how many tokens the distribution spreads over. CPU only; writes JSON.

    python scripts/sampler_flip_rates.py --out-dir benchmarks/results/sampler_flip_rates
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench_command import recorded_command  # noqa: E402

from sglang_tokenweave.determinism.sampling import RowParams, plan_sampling, sample  # noqa: E402


def inverse_cdf(logits: torch.Tensor, temperature: float, uniform: torch.Tensor) -> torch.Tensor:
    running = torch.softmax(logits.double() / temperature, dim=-1).cumsum(dim=-1)
    return (running <= uniform[:, None]).sum(dim=-1).clamp(max=logits.shape[1] - 1)


def flip_rates(rows: int, vocab: int, scale: float, error: float, temperature: float, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, vocab, generator=g, dtype=torch.float64) * scale
    other = logits + torch.randn(rows, vocab, generator=g, dtype=torch.float64) * error * logits.abs()
    logits, other = logits.float(), other.float()
    uniform = torch.rand(rows, generator=g, dtype=torch.float64)
    plan = plan_sampling([RowParams(seed=seed, position=i, temperature=temperature) for i in range(rows)], vocab)
    probs = torch.softmax(logits.double() / temperature, dim=-1)

    def changed(a: torch.Tensor, b: torch.Tensor) -> float:
        return round((a != b).double().mean().item(), 4)

    return {"scale": scale, "relative_error": error, "temperature": temperature, "vocab": vocab, "rows": rows,
            "effective_tokens": round((1 / (probs ** 2).sum(dim=-1)).median().item(), 1),
            "greedy": changed(logits.argmax(dim=-1), other.argmax(dim=-1)),
            "inverse_cdf": changed(inverse_cdf(logits, temperature, uniform), inverse_cdf(other, temperature, uniform)),
            "gumbel_max": changed(sample(logits, plan), sample(other, plan))}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--vocab", type=int, default=512)
    parser.add_argument("--scales", default="1,2,4,8")
    parser.add_argument("--errors", default="0.004,0.01")
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results" / "sampler_flip_rates")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # the same numbers on any machine
    results = [flip_rates(args.rows, args.vocab, float(s), float(e), args.temperature, seed=i)
               for i, (s, e) in enumerate((s, e) for s in args.scales.split(",") for e in args.errors.split(","))]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out = args.out_dir / "sampler_flip_rates.json"
    out.write_text(json.dumps({"card": "cpu", "versions": {"torch": torch.__version__},
                               "command": recorded_command(__file__, sys.argv[1:] if argv is None else argv),
                               "results": results}, indent=2) + "\n")
    print("scale  error  tokens  greedy  inverse_cdf  gumbel_max")
    for r in results:
        print(f"{r['scale']:5g}  {r['relative_error']:5g}  {r['effective_tokens']:6.1f}  {r['greedy']:6.4f}  "
              f"{r['inverse_cdf']:11.4f}  {r['gumbel_max']:10.4f}")


if __name__ == "__main__":
    main()
