"""Class-name mappings that vendors force on us, kept reversible.

Vertex AI labels may hold only letters, digits and underscores and must start with a letter,
so Stanford Cars ("AM General Hummer SUV 2000") and Pets ("american_bulldog" is fine, but
"Abyssinian" vs "abyssinian" style collisions can happen after folding) need a mapping that the
data stage (import CSVs) and the Vertex adapter (predictions back to class names) share.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_UNSAFE = re.compile(r"[^A-Za-z0-9_]")


def vertex_label_map(classes: Sequence[str]) -> dict[str, str]:
    """Deterministic, injective map class name -> Vertex-safe label.

    Unsafe characters become `_`, a label not starting with a letter gets a `c_` prefix, and
    collisions (after folding) get `_2`, `_3`, ... in sorted class order, so the same class list
    always maps the same way.
    """
    mapping: dict[str, str] = {}
    used: set[str] = set()
    for name in sorted(classes):
        base = _UNSAFE.sub("_", name) or "c"
        if not base[0].isalpha():
            base = "c_" + base
        label, k = base, 2
        while label in used:
            label, k = f"{base}_{k}", k + 1
        used.add(label)
        mapping[name] = label
    return mapping


def invert(mapping: dict[str, str]) -> dict[str, str]:
    return {v: k for k, v in mapping.items()}
