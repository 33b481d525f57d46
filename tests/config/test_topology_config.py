"""`topology:` and `topology_file`: parsed, merged, validated with errors that name the key;
self-dependencies and cycles are warnings, unknown services are fine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sentinel.config.load import effective_topology, parse_config, topology_warnings
from sentinel.errors import ConfigError

BASE = {
    "step": "10s", "window": "40s", "horizon": "20s", "features": [{"name": "qps"}],
    "failure": {"any": [{"metric": "qps", "op": ">=", "value": 1}]},
}


def test_inline_topology_is_a_caller_to_dependencies_map() -> None:
    config = parse_config({**BASE, "topology": {"checkout": ["payment", "inventory", "payment"],
                                                "cart": ["inventory"]}})
    topology = effective_topology(config)
    assert topology.dependencies("checkout") == ("payment", "inventory")
    assert topology.dependents("inventory") == ("cart", "checkout")
    assert topology_warnings(config) == []


@pytest.mark.parametrize(("value", "key"), [
    (["checkout"], "topology"),
    ({"checkout": "payment"}, "topology.checkout"),
    ({"checkout": [""]}, "topology.checkout[0]"),
    ({"checkout": [3]}, "topology.checkout[0]"),
])
def test_a_bad_topology_names_the_key(value: object, key: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config({**BASE, "topology": value})
    assert error.value.key == key


def test_self_dependency_and_cycle_are_warnings_not_errors() -> None:
    config = parse_config({**BASE, "topology": {"a": ["a", "b"], "b": ["a"]}})
    assert topology_warnings(config) == ["'a' lists itself as a dependency (ignored)",
                                         "dependency cycle a -> b -> a"]
    assert effective_topology(config).dependencies("a") == ("b",)


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_topology_file_adds_to_the_inline_map(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"topology{suffix}"
    path.write_text(json.dumps({"checkout": ["cart"], "search": ["index"]}))
    config = parse_config({**BASE, "topology": {"checkout": ["payment"]},
                           "topology_file": str(path)})
    topology = effective_topology(config)
    assert topology.dependencies("checkout") == ("payment", "cart")
    assert topology.dependencies("search") == ("index",)
    path.write_text(json.dumps({"checkout": ["inventory"]}))  # read again: the new content
    assert effective_topology(config).dependencies("checkout") == ("payment", "inventory")


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"a": "b"}'])
def test_a_bad_topology_file_is_a_start_up_error_naming_it(tmp_path: Path, content: str) -> None:
    path = tmp_path / "topology.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match="topology_file"):
        parse_config({**BASE, "topology_file": str(path)})
    with pytest.raises(ConfigError, match="topology_file"):
        parse_config({**BASE, "topology_file": str(tmp_path / "missing.yaml")})


def test_the_dump_shows_the_topology_as_written() -> None:
    import yaml

    from sentinel.config.load import dump_config

    config = parse_config({**BASE, "topology": {"checkout": ["payment", "inventory"]}})
    assert yaml.safe_load(dump_config(config))["topology"] == {"checkout": ["payment", "inventory"]}
