"""The settings of a dynamic table: how many rows it keeps, when a key gets one, which leave.

    DynamicSpec(capacity=1_000_000, admit_after=2, evict="lfu", ttl_steps=None)

- capacity: live rows kept after each step (None: no limit but the memory budget);
- admit_after: pushes a key must appear in before it gets a row (1: at its first push);
- evict: which rows leave when live rows exceed capacity: "lru" (least recently updated) or
  "lfu" (least often updated), ties to the smaller key;
- ttl_steps: rows not updated in the last ttl_steps steps leave (None: never for age);
- max_candidates: how many not-yet-admitted keys have their pushes counted at once (only with
  admit_after > 1); beyond it the least recently seen are forgotten, so a long tail of one-off
  keys costs bounded memory (service.core.dynamic.admission states the error bound).

`check_spec` refuses anything else with an InvalidRequest naming the field and the value.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from service.core.errors import InvalidRequest

Policy = Literal["lru", "lfu"]
MAX_CANDIDATES = 1_000_000
MAX_ROWS = 2**31 - 2  # the eviction bookkeeping's slot limit (service.core.dynamic.eviction)
FIELDS = ("capacity", "admit_after", "evict", "ttl_steps", "max_candidates")


@dataclass(frozen=True)
class DynamicSpec:
    capacity: int | None = None
    admit_after: int = 1
    evict: Policy = "lru"
    ttl_steps: int | None = None
    max_candidates: int = MAX_CANDIDATES

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_spec(settings: DynamicSpec | dict[str, Any]) -> DynamicSpec:
    """The settings as a DynamicSpec, defaults filled in; InvalidRequest names a bad field."""
    if isinstance(settings, DynamicSpec):
        values = settings.as_dict()
    elif isinstance(settings, dict):
        unknown = sorted(set(settings) - set(FIELDS))
        if unknown:
            raise InvalidRequest(f"dynamic.{unknown[0]} is not a setting of dynamic tables "
                                 f"(they are {list(FIELDS)})")
        values = {**DynamicSpec().as_dict(), **settings}
    else:
        raise InvalidRequest(f"dynamic must be an object of settings, got {settings!r}")
    for field, low, high, nullable in (("capacity", 1, MAX_ROWS, True),
                                       ("admit_after", 1, 2**31, False),
                                       ("ttl_steps", 1, 2**62, True),
                                       ("max_candidates", 1, MAX_ROWS, False)):
        value = values[field]
        if value is None and nullable:
            continue
        if not _whole(value) or not low <= value <= high:
            allowed = f"an integer in [{low}, {high}]" + (" or null" if nullable else "")
            raise InvalidRequest(f"dynamic.{field} must be {allowed}, got {value!r}")
    if values["evict"] not in ("lru", "lfu"):
        raise InvalidRequest(f"dynamic.evict must be 'lru' or 'lfu', got {values['evict']!r}")
    return DynamicSpec(**values)


__all__ = ["FIELDS", "MAX_CANDIDATES", "DynamicSpec", "Policy", "check_spec"]
