"""Labels: a name per row (a word, an item title), keyed by 64-bit integer ids.

A table's labels are a one-to-one map between ids and strings: each labelled id has one label
and a label names one row of the table (a second row asking for it is refused). Keys are int64
ids, not row positions, so a dynamic table (any int64 key, rows made on first use) labels its
rows the same way a dense one does; which ids a table accepts is the table's business
(`check_ids`, passed in by the caller).

    store = LabelStore()
    store.set(np.array([0, 1]), ["king", "queen"], merge=False, check_ids=table.check_ids)
    store.ids_of(["queen"], "positive")          # array([1])
    store.labels_of(np.array([1, 7]))            # ["queen", None]

Every change is checked whole before anything changes (types, lengths, duplicates, the ids, the
memory budget), then made under the store's lock: a refused request changes nothing.

Memory: `nbytes` counts what the two dictionaries hold (the label strings, the id integers and
the dictionaries' own tables, by sys.getsizeof), so the memory budget and TableInfo's nbytes see
labels as they see weights. Before a change, the budget is asked for an upper estimate of the
growth (ENTRY_BYTES per new entry on top of the new strings).
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from service.core.errors import InvalidRequest

MAX_LABEL_CHARS = 256
INT_BYTES = sys.getsizeof(2**40)  # an id above the small-int cache, as a Python int
# Upper estimate of one entry's share of the two dictionaries' tables (index + key/value slot
# at the lowest load factor CPython keeps: two dictionaries, 8 + 24 bytes a slot, 1/3 full).
ENTRY_BYTES = 2 * 3 * 32
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def check_label(label: Any, where: str) -> str:
    """A label is a string of 1..MAX_LABEL_CHARS characters that UTF-8 can carry."""
    if not isinstance(label, str):
        raise InvalidRequest(f"{where} must be a string, got {label!r}")
    if not 0 < len(label) <= MAX_LABEL_CHARS:
        shown = label if len(label) <= 40 else label[:37] + "..."
        raise InvalidRequest(
            f"{where} must have 1 to {MAX_LABEL_CHARS} characters, got {len(label)} ({shown!r})"
        )
    try:
        label.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest(
            f"{where} is not valid Unicode (a lone surrogate), got {label!r}") from None
    return label


class LabelStore:
    """The labels of one table. Thread-safe; `on_change` runs after every change (the table
    counts it, so a snapshot does not skip a table whose labels changed); `memory_check(extra)`
    raises BudgetExceeded before a change that would grow the store by `extra` bytes."""

    def __init__(
        self,
        on_change: Callable[[], None] | None = None,
        memory_check: Callable[[int], None] | None = None,
    ) -> None:
        self.on_change = on_change
        self.memory_check = memory_check  # the table passes its budget's check (or None)
        self._label_of: dict[int, str] = {}
        self._id_of: dict[str, int] = {}
        self._text_bytes = 0  # sys.getsizeof of every label string held
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._label_of)

    @property
    def nbytes(self) -> int:
        """Bytes the labels hold: strings, id integers and both dictionaries' tables."""
        if not self._label_of:
            return 0
        return (self._text_bytes + len(self._label_of) * INT_BYTES
                + sys.getsizeof(self._label_of) + sys.getsizeof(self._id_of))

    # -- changing ---------------------------------------------------------------------------
    def set(
        self,
        ids: np.ndarray,
        labels: Sequence[Any],
        *,
        merge: bool,
        check_ids: Callable[[np.ndarray], None],
    ) -> None:
        """Label row ids[i] with labels[i]. merge=False: these become the table's only labels;
        merge=True: other rows keep theirs, and a row given here is relabelled. Refused whole
        (InvalidRequest, nothing changed) on a duplicate id or label, a label already naming a
        row this request does not relabel, or an id check_ids refuses."""
        if ids.ndim != 1 or ids.dtype.kind not in "iu":
            raise InvalidRequest(f"ids must be a list of integers, got {ids.dtype} {ids.shape}")
        if len(ids) != len(labels):
            raise InvalidRequest(
                f"ids and labels must have the same length, got {len(ids)} ids and "
                f"{len(labels)} labels"
            )
        if len(ids) and (int(ids.min()) < INT64_MIN or int(ids.max()) > INT64_MAX):
            raise InvalidRequest("ids must be 64-bit integers")
        for position, label in enumerate(labels):
            check_label(label, f"labels[{position}]")
        check_ids(ids)
        id_list = [int(value) for value in ids]
        _refuse_duplicates(id_list, "ids", "id")
        _refuse_duplicates(list(labels), "labels", "label")
        new_pairs = dict(zip(id_list, labels, strict=True))
        with self._lock:
            if merge:
                for row, label in new_pairs.items():
                    owner = self._id_of.get(label)
                    if owner is not None and owner != row and owner not in new_pairs:
                        raise InvalidRequest(
                            f"label {label!r} already names row {owner}; a label names one row "
                            f"per table (relabel row {owner} in the same request to move it)"
                        )
            replaced = [self._label_of[row] for row in new_pairs if row in self._label_of]
            if not merge:
                replaced = list(self._label_of.values())
            added_entries = len(new_pairs) - (len(replaced) if merge else len(self._label_of))
            growth = (sum(map(sys.getsizeof, labels)) - sum(map(sys.getsizeof, replaced))
                      + max(0, added_entries) * (INT_BYTES + ENTRY_BYTES))
            if growth > 0 and self.memory_check is not None:
                self.memory_check(growth)
            if merge:
                for row in new_pairs:
                    old = self._label_of.get(row)
                    if old is not None and self._id_of.get(old) == row:
                        del self._id_of[old]
                        self._text_bytes -= sys.getsizeof(old)
                for row, label in new_pairs.items():
                    self._label_of[row] = label
                    self._id_of[label] = row
                    self._text_bytes += sys.getsizeof(label)
            else:
                self._label_of = new_pairs
                self._id_of = {label: row for row, label in new_pairs.items()}
                self._text_bytes = sum(map(sys.getsizeof, labels))
        if self.on_change is not None:
            self.on_change()

    # -- reading ----------------------------------------------------------------------------
    def labels_of(self, ids: Sequence[int] | np.ndarray) -> list[str | None]:
        """The label of each id (None where it has none)."""
        label_of = self._label_of  # replaced, never mutated, by a merge=False set
        return [label_of.get(int(row)) for row in ids]

    def ids_of(self, labels: Sequence[str], field: str) -> np.ndarray:
        """(n,) int64: the row each label names; InvalidRequest naming the first unknown one
        (`field` says where it came from, e.g. "positive[2]")."""
        id_of = self._id_of
        rows = np.empty(len(labels), dtype=np.int64)
        for position, label in enumerate(labels):
            row = id_of.get(label)
            if row is None:
                raise InvalidRequest(f"{field}: label {label!r} names no row of this table")
            rows[position] = row
        return rows

    def items(self) -> tuple[np.ndarray, list[str]]:
        """Every (id, label), sorted by id: (n,) int64 ids and their labels."""
        with self._lock:
            pairs = sorted(self._label_of.items())
        ids = np.fromiter((row for row, _ in pairs), dtype=np.int64, count=len(pairs))
        return ids, [label for _, label in pairs]

    # -- snapshots --------------------------------------------------------------------------
    def to_json(self) -> bytes:
        """{"ids": [...], "labels": [...]}, sorted by id: the snapshot's labels.json."""
        ids, labels = self.items()
        return json.dumps({"ids": ids.tolist(), "labels": labels}, ensure_ascii=False).encode()

    def load_json(self, data: bytes, check_ids: Callable[[np.ndarray], None]) -> None:
        """Replace the labels with those of a labels.json (InvalidRequest if it is not one)."""
        try:
            content = json.loads(data)
            ids, labels = content["ids"], content["labels"]
            if not isinstance(ids, list) or not isinstance(labels, list):
                raise TypeError("ids and labels must be lists")
            id_array = np.array(ids, dtype=np.int64) if ids else np.empty(0, np.int64)
        except (ValueError, TypeError, KeyError, OverflowError) as error:
            raise InvalidRequest(f"labels.json is not a label file: {error}") from None
        self.set(id_array, labels, merge=False, check_ids=check_ids)


def _refuse_duplicates(values: list[Any], field: str, noun: str) -> None:
    if len(set(values)) == len(values):
        return
    seen: dict[Any, int] = {}
    for position, value in enumerate(values):
        if value in seen:
            raise InvalidRequest(
                f"{field}[{position}] repeats {noun} {value!r} of {field}[{seen[value]}]; a "
                f"{noun} may appear once per request"
            )
        seen[value] = position


__all__ = ["MAX_LABEL_CHARS", "LabelStore", "check_label"]
