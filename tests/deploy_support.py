"""Reading the deployment files as Docker, compose and Kubernetes read them, for tests/test_deploy*.

No engine runs here: these helpers parse the Dockerfile (instructions by stage), match paths
against .dockerignore (Docker's rules: last matching pattern wins, a pattern matching a parent
directory matches everything under it, `*` stays within one path segment), and load the YAML.
"""

from __future__ import annotations

import json
import posixpath
import re
import shlex
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import msgspec
import yaml  # type: ignore[import-untyped]  # Litestar's dependency; no stubs installed

from gateway.settings import PREFIX, Settings
from tests.conftest import REPO_ROOT

DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
DEPLOY = REPO_ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
KUBERNETES = DEPLOY / "kubernetes"


def setting_names() -> set[str]:
    """Every environment variable the gateway reads as a setting: GATEWAY_<FIELD>."""
    return {PREFIX + field.name.upper() for field in msgspec.structs.fields(Settings)}


@dataclass(frozen=True)
class Instruction:
    stage: int  # 0 for the first FROM's stage
    keyword: str  # upper case
    args: str

    def exec_form(self) -> list[str]:
        """The JSON (exec) form of CMD, VOLUME and the like."""
        value = json.loads(self.args)
        assert isinstance(value, list), f"{self.keyword} {self.args} is not a JSON list"
        return [str(item) for item in value]

    def flags(self) -> dict[str, str]:
        """`--name=value` options at the start of the arguments (COPY --from=..., --chown=...)."""
        found: dict[str, str] = {}
        for word in shlex.split(self.args):
            if not word.startswith("--"):
                break
            name, _, value = word[2:].partition("=")
            found[name] = value
        return found

    def operands(self) -> list[str]:
        """The arguments after the options (COPY's sources and destination)."""
        words = shlex.split(self.args)
        return [word for word in words if not word.startswith("--")]


def dockerfile(path: Path = DOCKERFILE) -> list[Instruction]:
    """The instructions, continuation lines joined, comments and blank lines dropped."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # Docker drops comment lines even inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued instruction"
    stage = -1
    instructions = []
    for text in logical:
        keyword, _, args = text.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        instructions.append(Instruction(stage, keyword, args.strip()))
    return instructions


def runtime_stage(instructions: list[Instruction]) -> list[Instruction]:
    """The last stage: what the image is."""
    last = max(i.stage for i in instructions)
    return [i for i in instructions if i.stage == last]


def env_of(instructions: list[Instruction]) -> dict[str, str]:
    """The variables the stage's ENV instructions set (the `KEY=value ...` form)."""
    env: dict[str, str] = {}
    for instruction in instructions:
        if instruction.keyword == "ENV":
            for word in shlex.split(instruction.args):
                key, sep, value = word.partition("=")
                assert sep, f"ENV {instruction.args!r}: use the KEY=value form"
                env[key] = value
    return env


def last(instructions: list[Instruction], keyword: str) -> Instruction:
    found = [i for i in instructions if i.keyword == keyword]
    assert found, f"no {keyword} in the stage"
    return found[-1]


def image_path(workdir: str, relative: Path) -> PurePosixPath:
    """Where a path the gateway resolves against its working directory lies in the image."""
    return PurePosixPath(workdir) / PurePosixPath(relative.as_posix())


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Go's filepath.Match syntax as Docker extends it: `**` spans segments, `*` does not."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def dockerignore(path: Path = DOCKERIGNORE) -> list[tuple[bool, re.Pattern[str]]]:
    """(excludes, pattern) pairs in file order; `!` patterns re-include."""
    rules = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        include = line.startswith("!")
        cleaned = posixpath.normpath(line.removeprefix("!").strip()).lstrip("/")
        rules.append((not include, _pattern_regex(cleaned)))
    return rules


def in_build_context(relative: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether `docker build` sends this path (relative to the context root)."""
    parts = PurePosixPath(relative).parts
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for excludes, pattern in rules:
        if any(pattern.fullmatch(candidate) for candidate in candidates):
            excluded = excludes
    return not excluded


def yaml_documents(path: Path) -> list[dict[str, Any]]:
    """Every non-empty document of a YAML file, each a mapping."""
    documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    assert all(isinstance(doc, dict) for doc in documents), f"{path}: not a list of mappings"
    return documents
