"""Reading a YAML config file defensively: bounded size, bounded alias expansion, no
duplicate keys.

    >>> document = read_yaml("config/sentinel.yaml")     # ConfigError on any problem

- The file may hold at most MAX_CONFIG_BYTES (a config is a few KB; a 50 MB value would take
  minutes to parse and is never meant).
- The document, with every alias expanded, may hold at most MAX_EXPANDED_NODES nodes: a
  "billion laughs" of nested aliases is refused before anything walks it.
- A key given twice in one mapping is an error naming both lines (YAML would silently keep
  the last one: ``step: 10s`` then ``step: 20s`` meant 20 s). Merge keys (``<<``) still
  override as YAML says.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from sentinel.errors import ConfigError

MAX_CONFIG_BYTES = 1 << 20
MAX_EXPANDED_NODES = 100_000
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Loader(yaml.SafeLoader):
    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict:  # type: ignore[override]
        seen: dict[object, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.setdefault(key, line)
            except TypeError:  # an unhashable key: SafeLoader refuses it with its own message
                continue
            if first != line:
                raise ConfigError(_short_key(key), f"a second value on line {line}",
                                  f"each key once per mapping: it is already on line {first} "
                                  f"of {self.name} (YAML would silently keep the last one)")
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path) -> object:
    """The document in `path` (None for an empty file); every problem is a ConfigError."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError("<file>", str(path), f"a readable file ({exc.strerror or exc})") from exc
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError("<file>", str(path), f"a config file of at most {MAX_CONFIG_BYTES} "
                                               f"bytes (it is larger: is this the right file?)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError("<file>", str(path), f"a UTF-8 file ({exc.reason} at byte "
                                               f"{exc.start})") from exc
    loader = _Loader(text)
    loader.name = str(path)  # YAML's messages name the file
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        expanded = _expanded_size(node, {})
        if expanded > MAX_EXPANDED_NODES:
            raise ConfigError("<file>", str(path), f"at most {MAX_EXPANDED_NODES} values once "
                                                   f"aliases are expanded (it expands to "
                                                   f"{_words(expanded)}: nested aliases?)")
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise ConfigError("<file>", str(path), f"valid YAML: {exc}") from exc
    except RecursionError as exc:
        raise ConfigError("<file>", str(path), "valid YAML nested less deeply") from exc
    except ValueError as exc:  # int() refuses more than 4,300 digits
        raise ConfigError("<file>", str(path), "numbers of at most 4,300 digits (no config value "
                                               "needs more)") from exc
    finally:
        loader.dispose()


def _expanded_size(node: Node, memo: dict[int, int]) -> int:
    """Nodes in the document with aliases expanded; linear in the distinct nodes."""
    known = memo.get(id(node))
    if known is not None:
        return known
    memo[id(node)] = 1  # a recursive alias counts once (SafeLoader builds it as a cycle)
    size = 1
    if isinstance(node, SequenceNode):
        size += sum(_expanded_size(child, memo) for child in node.value)
    elif isinstance(node, MappingNode):
        size += sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    memo[id(node)] = size = min(size, 1 << 62)
    return size


def _words(count: int) -> str:
    return f"{count:,} values" if count < 10**12 else "more than 10^12 values"


def _short_key(key: object) -> str:
    text = str(key)
    return text if len(text) <= 80 else text[:80] + "..."
