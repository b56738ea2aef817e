"""pipeline/yamlfile.py: a key written twice in one mapping is an error; merges read as safe_load reads them."""

from __future__ import annotations

import pytest
import yaml

from pipeline.yamlfile import load_yaml

MERGES = {
    "override": "base: &b {a: 1, c: 2}\nx:\n  <<: *b\n  a: 2\n",
    # The anchored mapping sits deeper than the one that merges it, so PyYAML flattens it (writing
    # the merged k into it) before it is read itself: the first version of the check saw k twice.
    "deeper anchor": "defs:\n  b: &b\n    <<: {k: 0}\n    k: 1\nx:\n  <<: *b\n",
    "chain": "c: &c {a: 0}\nb: &b\n  <<: *c\n  a: 1\nx:\n  <<: *b\n",
    "deep": "defs:\n  inner:\n    b: &b\n      <<: {k: 0, j: 2}\n      k: 1\nx:\n  <<: *b\n",
    "list of merges": "a: &a {k: 1}\nb: &b {k: 2, j: 3}\nx:\n  <<: [*a, *b]\n  j: 4\n",
}


@pytest.mark.parametrize("text", MERGES.values(), ids=list(MERGES))
def test_merges_and_their_overrides_read_as_safe_load_reads_them(text: str) -> None:
    assert load_yaml(text) == yaml.safe_load(text)


@pytest.mark.parametrize(
    ("text", "key", "line"),
    [
        ("a: 1\nb: 2\na: 3\n", "'a'", 3),
        ("outer:\n  x: 1\n  x: 2\n", "'x'", 3),
        ("base: &b {k: 1}\nx:\n  <<: *b\n  j: 1\n  j: 2\n", "'j'", 5),
        ("{1: a, 1.0: b}", "1.0", 1),  # equal keys of two types: safe_load keeps one value and loses the other
    ],
)
def test_a_key_written_twice_is_an_error_at_its_second_line(text: str, key: str, line: int) -> None:
    with pytest.raises(yaml.YAMLError) as caught:
        load_yaml(text)
    assert f"the key {key} is written twice" in str(caught.value)
    assert caught.value.problem_mark.line + 1 == line  # type: ignore[attr-defined]
