"""Why the views differ, in words: what the sampled differing keys' events have in common.

The lineage names, per sampled key, its suspect events and flags; an approver reading the verdict wants
them counted: "6 of 6 sampled keys: a record quarantined in the lake (conflict)". Each key counts once
per cause; the likeliest suspect event of a key (the lineage's first) names what live did with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from checks.html import key_text
from checks.lineage import KeyLineage

__all__ = ["Cause", "causes"]
EXAMPLES = 3
#: the changed samples from which one difference shared by all of them reads as an offset, not as chance
MIN_OFFSET = 5
#: what live did with a key's likeliest suspect event, by the lineage's reading of it: a suspicion, as a
#: number equal to the difference may be chance
DID = {"live misses it": "live seems to miss {} event the rebuild applies",
       "live counts it once more": "live seems to apply {} event twice",
       "live counts it once more or misses it": "live seems to apply {} event twice, or to miss it"}
FLAGS = {"late": "an event archived more than a day after it happened (late): a live consumer may have dropped it",
         "gap": "sequence numbers missing among the key's events: the lake lacks events of it",
         "duplicate": "an event id twice in the lake (or also quarantined)",
         "no_events": "no events in the lake up to the run's lake_version"}


@dataclass(frozen=True)
class Cause:
    """One cause, the sampled differing keys it applies to, and the first few of them."""

    cause: str
    keys: int
    examples: tuple[dict[str, Any], ...]

    def text(self, sampled: int) -> str:
        shown = ", ".join(", ".join(key_text(v) for v in k.values()) for k in self.examples)
        return f"{self.keys:,} of {sampled:,} sampled keys: {self.cause} (e.g. {shown})"

    def to_dict(self) -> dict[str, Any]:
        return {"cause": self.cause, "keys": self.keys, "examples": list(self.examples)}


def causes(lineage: Sequence[KeyLineage], changed: Sequence[dict[str, Any]] = ()) -> list[Cause]:
    """The causes of the sampled keys, the most common first; ``changed``: the diff's changed samples, whose
    differences, when all alike, are a cause of their own."""
    found: dict[str, list[dict[str, Any]]] = {}
    for x in lineage:
        for cause in _of(x):
            found.setdefault(cause, []).append(x.key)
    ranked = [Cause(c, len(keys), tuple(keys[:EXAMPLES])) for c, keys in found.items()]
    return sorted(_offset(changed) + ranked, key=lambda c: -c.keys)  # stable: ties keep the order first met


def _offset(changed: Sequence[dict[str, Any]]) -> list[Cause]:
    """Live - rebuilt the same in every changed sample (every total 1.00 higher): a suspect event whose
    number equals it is chance, and a consumer or version computing the value otherwise the likelier cause."""
    if len(changed) < MIN_OFFSET:
        return []
    alike = {}
    for column in changed[0]["changes"]:
        diffs = {_minus(s["changes"].get(column)) for s in changed}
        if len(diffs) == 1 and (d := diffs.pop()) is not None:
            alike[column] = d
    if not alike:
        return []
    said = ", ".join(f"{c} {d:+}" for c, d in alike.items())
    keys = tuple({k: v for k, v in s.items() if k != "changes"} for s in changed[:EXAMPLES])
    return [Cause(f"live - rebuilt is the same in every changed key sampled ({said}): an offset, likelier from how "
                  "live computes the value than from single events (the suspect events named may be chance)",
                  len(changed), keys)]


def _minus(change: dict[str, Any] | None) -> Decimal | None:
    """Live - rebuilt of a changed number (None for anything else)."""
    values = (change or {}).get("live"), (change or {}).get("rebuilt")
    if not all(isinstance(v, int | float | Decimal) and not isinstance(v, bool) for v in values):
        return None
    return Decimal(str(values[0])) - Decimal(str(values[1]))


def _of(x: KeyLineage) -> list[str]:
    said = []
    if x.explained_by:
        first = x.explained_by[0]
        what = ("an " if first["event_type"][:1].lower() in "aeiou" else "a ") + first["event_type"]
        columns = ", ".join(dict.fromkeys(e["column"] for e in x.explained_by if e["event_id"] == first["event_id"]))
        said.append(DID.get(first["reading"], "{}: " + first["reading"]).format(what)
                    + f" (its numbers equal the difference in {columns})")
    said += dict.fromkeys(f"a record of the key quarantined in the lake (reason: {str(q['reason']).split(':')[0]})"
                          for q in x.quarantine)
    said += [FLAGS[f] for f in x.flags if f in FLAGS]
    if not said:
        said.append(f"{x.kind.replace('_', ' ')}, and no event of the lake explains it: compare how the projection "
                    "and live's consumer compute it")
    return said
