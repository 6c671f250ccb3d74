"""The Vertex label mapping: safe, injective, deterministic, reversible."""

from hypothesis import given
from hypothesis import strategies as st

from mlbench.data.labels import invert, vertex_label_map

SAFE = __import__("re").compile(r"[A-Za-z][A-Za-z0-9_]*")


@given(st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=30, unique=True))
def test_mapping_is_safe_injective_and_reversible(classes):
    mapping = vertex_label_map(classes)
    assert set(mapping) == set(classes)
    assert all(SAFE.fullmatch(v) for v in mapping.values())
    assert invert(mapping) == {v: k for k, v in mapping.items()}
    assert len(set(mapping.values())) == len(classes)
    assert vertex_label_map(list(reversed(classes))) == mapping


def test_examples():
    m = vertex_label_map(["AM General Hummer SUV 2000", "1 bus", "a-b", "a_b", "Abyssinian"])
    assert m["AM General Hummer SUV 2000"] == "AM_General_Hummer_SUV_2000"
    assert m["1 bus"] == "c_1_bus"
    assert {m["a-b"], m["a_b"]} == {"a_b", "a_b_2"}
    assert m["Abyssinian"] == "Abyssinian"
