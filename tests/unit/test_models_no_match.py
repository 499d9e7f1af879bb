"""`airlab models PATTERN` with a pattern that matches nothing is a usage error, not an empty success."""

from __future__ import annotations

import json

import pytest

from airlab import registry


@pytest.mark.parametrize("json_flag", [(), ("--json",)])
def test_a_pattern_matching_no_model_exits_2_and_names_the_known_ones(airlab_cli, json_flag):
    r = airlab_cli("models", "nosuch", *json_flag)
    assert r.code == 2, (r.out, r.err)
    assert r.out == ""  # nothing a script could take for an (empty) answer
    assert r.err_lines[0] == "error: no model matches 'nosuch'"
    assert r.err_lines[-1].startswith("hint: known models: ")
    for name in registry.model_names():
        assert name in r.err_lines[-1]


def test_a_typo_gets_a_suggestion(airlab_cli):
    r = airlab_cli("models", "vea")
    assert r.code == 2 and "did you mean 'vae'?" in r.err_lines[0]


def test_a_pattern_that_matches_still_lists(airlab_cli):
    r = airlab_cli("models", "*vae*", "--json")
    assert r.code == 0 and [row["name"] for row in json.loads(r.out)] == ["vae"]
