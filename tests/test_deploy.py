"""deploy/: the files this repository cannot run here (no systemd, no Docker daemon)
kept consistent with what it does run: the nginx template (tests/integration/
test_nginx.py), the CLI and the lock. What these tests cannot see (the images, a
real systemd) the README says is untested."""

import re
import shlex
from pathlib import Path

import yaml

from itemrooms.api.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
TEMPLATE = DEPLOY / "nginx" / "itemrooms.conf.template"


def placeholders() -> set[str]:
    return set(re.findall(r"\$\{(ITEMROOMS_[A-Z_]+)\}", TEMPLATE.read_text()))


def test_compose_fills_every_placeholder_of_the_tested_nginx_template() -> None:
    compose = yaml.safe_load((DEPLOY / "docker" / "compose.yaml").read_text())
    nginx = compose["services"]["nginx"]
    mounted = [v.split(":")[0] for v in nginx["volumes"]]
    assert "../nginx/itemrooms.conf.template" in mounted
    assert (DEPLOY / "docker" / "../nginx/itemrooms.conf.template").resolve() == TEMPLATE
    assert placeholders() == {n for n in nginx["environment"] if n.startswith("ITEMROOMS_")}
    upstreams = {nginx["environment"][k].split(":")[0] for k in placeholders() if "UPSTREAM" in k}
    assert upstreams == {"itemrooms-1", "itemrooms-2"} <= set(compose["services"])
    for name in upstreams:
        env = compose["services"][name]["environment"]
        assert env["ITEMROOMS_BACKEND"] == "redis" and "ITEMROOMS_FORWARDED_ALLOW_IPS" in env


def test_the_dockerfile_installs_the_lock_and_runs_a_command_the_cli_accepts() -> None:
    dockerfile = (DEPLOY / "docker" / "Dockerfile").read_text()
    assert "uv sync --locked" in dockerfile
    pinned = re.search(r"astral-sh/uv:(\S+)", dockerfile)
    make = re.search(r"^UV_VERSION := (\S+)$", (ROOT / "Makefile").read_text(), re.M)
    assert pinned and make and pinned.group(1) == make.group(1)
    command = re.search(r"^CMD (\[.*\])$", dockerfile, re.M)
    assert command is not None
    argv = yaml.safe_load(command.group(1))
    assert argv[0] == "itemrooms"
    args = build_parser().parse_args(argv[1:])
    assert (args.command, args.host, args.port) == ("serve", "0.0.0.0", 8000)


def test_the_systemd_unit_runs_a_command_the_cli_accepts() -> None:
    unit = (DEPLOY / "systemd" / "itemrooms.service").read_text()
    exec_start = re.search(r"^ExecStart=(.*)$", unit, re.M)
    assert exec_start is not None
    argv = shlex.split(exec_start.group(1))
    assert argv[0].endswith("/itemrooms")
    args = build_parser().parse_args(argv[1:])
    assert args.command == "serve" and args.workers == 2
    assert "KillSignal=SIGINT" in unit  # what uvicorn shuts down gracefully on
