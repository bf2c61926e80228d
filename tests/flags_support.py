"""Helpers shared by the flags tests (the demo flag, the official flagd schema); no tests."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from referencing import Registry, Resource

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_FILE = REPO_ROOT / "flags" / "digits.json"
DEMO_KEY = "digits-release"
KNOWN = {"digits": {"1", "2", "3", "4"}}

# The official flagd schema (flags.json + the targeting.json it references). The vendored
# copy under tests/data/flagd is preferred; the shared reference copy beside the checkout
# serves until it is vendored.
SCHEMA_DIRS = (
    REPO_ROOT / "tests" / "data" / "flagd",
    REPO_ROOT.parent / "shared" / "reference" / "flagd" / "flagd-schemas" / "json",
)


def demo_document() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DEMO_FILE.read_text())
    return document


def demo_flag() -> dict[str, Any]:
    flag: dict[str, Any] = demo_document()["flags"][DEMO_KEY]
    return flag


def flag_with(**changes: Any) -> dict[str, Any]:
    """The demo flag with top-level properties replaced (None deletes one)."""
    flag = copy.deepcopy(demo_flag())
    for name, value in changes.items():
        if value is None:
            flag.pop(name, None)
        else:
            flag[name] = value
    return flag


def schema_errors(document: Any) -> list[str]:
    """Every error the official flagd schema finds in `document` (empty when valid)."""
    folder = next((d for d in SCHEMA_DIRS if (d / "flags.json").is_file()), None)
    if folder is None:
        pytest.fail(f"the flagd schema is not in any of {[str(d) for d in SCHEMA_DIRS]}")
    flags_schema = json.loads((folder / "flags.json").read_text())
    targeting_schema = json.loads((folder / "targeting.json").read_text())
    registry: Registry[Any] = Registry().with_resources(
        (schema["$id"], Resource.from_contents(schema))
        for schema in (flags_schema, targeting_schema)
    )
    # Enter through the $id: in draft-07 a root $ref hides its sibling $id (the base URI).
    validator = jsonschema.Draft7Validator({"$ref": flags_schema["$id"]}, registry=registry)
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]


def as_document(key: str, flag: dict[str, Any]) -> dict[str, Any]:
    return {"$schema": "https://flagd.dev/schema/v0/flags.json", "flags": {key: flag}}
