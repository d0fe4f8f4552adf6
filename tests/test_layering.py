"""The package's layers, read from its source: only ``glue/`` imports SGLang, and the pure packages
never import the glue. Every import counts, at module level or inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

import sglang_tokenweave

PURE_PACKAGES = ("comm", "overlap", "determinism", "bench", "models")
# The command users run (python -m sglang_tokenweave.launch_server): it parses our flags and hands
# over to SGLang's own launcher, so it imports SGLang inside its functions.
ENTRY_POINTS = ("launch_server",)


def imported_modules(source: str, module: str, is_package: bool) -> set[str]:
    """Absolute names of every module ``module`` imports (relative imports resolved)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = module.split(".")
                base = parts[: len(parts) - node.level + (1 if is_package else 0)]
                prefix = ".".join(base)
                target = f"{prefix}.{node.module}" if node.module else prefix
            else:
                target = node.module
            names.add(target)
            names.update(f"{target}.{alias.name}" for alias in node.names)  # from pkg import submodule
    return names


def layering_violations(root: Path, package: str) -> list[str]:
    """Each import that breaks the layers, as ``module imports name``."""
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).with_suffix("")
        is_package = rel.name == "__init__"
        parts = rel.parts[:-1] if is_package else rel.parts
        module = ".".join((package, *parts))
        top = parts[0] if parts else ""
        for name in sorted(imported_modules(path.read_text(), module, is_package)):
            if name == "sglang" or name.startswith("sglang."):
                if top != "glue" and not (len(parts) == 1 and top in ENTRY_POINTS):
                    found.append(f"{module} imports {name}")
            elif top in PURE_PACKAGES and (name == f"{package}.glue" or name.startswith(f"{package}.glue.")):
                found.append(f"{module} imports {name}")
    return found


def test_only_glue_imports_sglang_and_pure_packages_never_import_glue():
    root = Path(sglang_tokenweave.__file__).parent
    assert (root / "glue").is_dir() and all((root / p).is_dir() for p in PURE_PACKAGES if p != "models")
    assert layering_violations(root, "sglang_tokenweave") == []


def test_the_glue_is_where_sglang_is_imported():
    # The walker sees real imports: the glue does import SGLang (at module level and in functions).
    root = Path(sglang_tokenweave.__file__).parent
    glue = [p for p in (root / "glue").rglob("*.py")
            if any(n.startswith("sglang.") for n in imported_modules(p.read_text(), "sglang_tokenweave.glue.x", False))]
    assert len(glue) >= 10


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_planted_violations_are_found(tmp_path):
    pkg = tmp_path / "pkg"
    _write(pkg, {
        "__init__.py": "",
        "launch_server.py": "def main():\n    from sglang.srt.server_args import ServerArgs\n",
        "glue/__init__.py": "",
        "glue/hooks.py": "import sglang.srt.managers.scheduler\n",
        "comm/__init__.py": "",
        "comm/ok.py": "import torch\nfrom pkg.determinism import rules\n",
        "comm/late.py": "def f():\n    from sglang.srt.utils import kill_process_tree\n",
        "overlap/__init__.py": "from ..glue import hooks\n",
        "determinism/__init__.py": "",
        "determinism/rules.py": "from pkg import glue\n",
        "bench/tool.py": "import pkg.glue.hooks as h\n",
        "helper.py": "import sglang\n",
        "nested/launch_server.py": "from sglang import launch_server\n",
    })
    assert layering_violations(pkg, "pkg") == [
        "pkg.bench.tool imports pkg.glue.hooks",
        "pkg.comm.late imports sglang.srt.utils",
        "pkg.comm.late imports sglang.srt.utils.kill_process_tree",
        "pkg.determinism.rules imports pkg.glue",
        "pkg.helper imports sglang",
        "pkg.nested.launch_server imports sglang",
        "pkg.nested.launch_server imports sglang.launch_server",
        "pkg.overlap imports pkg.glue",
        "pkg.overlap imports pkg.glue.hooks",
    ]
