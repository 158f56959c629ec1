"""Why the views differ, in words: what the sampled differing keys' events have in common.

The lineage names, per sampled key, its suspect events and flags; an approver reading the verdict wants
them counted: "6 of 6 sampled keys: a record quarantined in the lake (conflict)". Each key counts once
per cause; the likeliest suspect event of a key (the lineage's first) names what live did with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from checks.html import key_text
from checks.lineage import KeyLineage

__all__ = ["Cause", "causes"]
EXAMPLES = 3
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


def causes(lineage: Sequence[KeyLineage]) -> list[Cause]:
    """The causes of the sampled keys, the most common first."""
    found: dict[str, list[dict[str, Any]]] = {}
    for x in lineage:
        for cause in _of(x):
            found.setdefault(cause, []).append(x.key)
    ranked = sorted(found.items(), key=lambda c: -len(c[1]))  # stable: ties keep the order first met
    return [Cause(c, len(keys), tuple(keys[:EXAMPLES])) for c, keys in ranked]


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
