"""The JSON Schema: generated from the section classes, committed up to date, and in
agreement with the loader on what a file may say."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import jsonschema
import pytest

from velithon.config import config_schema, schema_text

COMMITTED = Path(__file__).parents[2] / "docs" / "velithon-config.schema.json"


def test_the_committed_schema_is_up_to_date() -> None:
    assert COMMITTED.read_text() == schema_text(), (
        "regenerate it: velithon config schema > docs/velithon-config.schema.json")


def test_velithon_config_schema_prints_it() -> None:
    result = subprocess.run([sys.executable, "-m", "velithon", "config", "schema"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout == schema_text()


def test_it_is_a_valid_schema_that_describes_every_key() -> None:
    schema = config_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    route = schema["properties"]["routes"]["items"]
    assert route["required"] == ["path", "targets"]
    assert route["additionalProperties"] is False
    assert route["properties"]["weights"] == {
        "description": "One integer weight per target (the weighted strategy needs them).",
        "type": "array", "items": {"type": "integer"}}
    assert "weighted" in route["properties"]["load_balancing_strategy"]["enum"]
    assert route["properties"]["retry_on_statuses"]["default"] == [502, 503, 504]
    for section in ("server", "admin", "logging"):
        for name, key in schema["properties"][section]["properties"].items():
            assert key.get("description"), (section, name)


GOOD = """
[server]
port = 8080
[[routes]]
path = "/api/{path:path}"
targets = ["http://10.0.0.1:8000", "http://10.0.0.2:8000"]
load_balancing_strategy = "weighted"
weights = [3, 1]
outlier_detection = { consecutive_5xx = 3 }
"""


@pytest.mark.parametrize("mistake", [
    ("weights = [3, 1]", "wieghts = [3, 1]"),
    ("weights = [3, 1]", 'weights = [3, "a"]'),
    ("port = 8080", 'port = "8080"'),
    ('"weighted"', '"fastest"'),
    ("consecutive_5xx = 3", "consecutive_5xxx = 3"),
    ("[server]", "[servr]"),
])
def test_schema_and_loader_agree_on_typos(mistake: tuple[str, str]) -> None:
    validator = jsonschema.Draft202012Validator(config_schema())
    assert not list(validator.iter_errors(tomllib.loads(GOOD)))
    bad = tomllib.loads(GOOD.replace(*mistake))
    assert list(validator.iter_errors(bad)), mistake
    json.dumps(bad)  # the schema sees what the loader sees: plain JSON types
