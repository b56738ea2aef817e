"""YAML as this project reads its own files (settings, alert rules, the alerts config): safe, and
a key written twice in one mapping is an error.

PyYAML keeps the last of two equal keys without a word. A settings file with ``detectors:`` twice
kept only the second block (its ``trusted_system_prompts`` were lost), and an alert rule with
``match:`` twice passed ``alerts test`` while it watched the second category, not the first (a
hostile review, 2026-12-07). The inference logs' JSON is held to the same rule (pipeline/decode.py).
"""

from __future__ import annotations

from typing import IO, Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode


class _UniqueKeyLoader(yaml.SafeLoader):
    """Checks each mapping's own keys before PyYAML flattens its ``<<:`` merges: flattening writes
    the merged keys into the node itself, so a mapping that overrides a merged key would read as
    one with a key written twice once flattened (the review of this loader, 2026-12-07)."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._checked: set[int] = set()

    def flatten_mapping(self, node: MappingNode) -> None:
        if id(node) not in self._checked:
            self._checked.add(id(node))
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # "<<:" merges are not keys of their own
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                except TypeError:  # an unhashable key: SafeLoader reports it itself
                    continue
                if duplicate:
                    raise ConstructorError(
                        "while reading a mapping", node.start_mark, f"the key {key!r} is written twice", key_node.start_mark
                    )
                seen.add(key)
        super().flatten_mapping(node)


def load_yaml(stream: str | bytes | IO[str] | IO[bytes]) -> Any:
    """``yaml.safe_load`` that refuses a key written twice in one mapping (a ``ConstructorError``
    with the line of the second, a ``yaml.YAMLError`` as every other syntax error)."""
    return yaml.load(stream, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
