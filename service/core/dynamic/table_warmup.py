"""Every DynamicTable operation once, on small throwaway tables of each dtype and optimizer and
each eviction setting, with inputs as requests give them (readonly arrays parsed from a body,
int64 and uint64 ids): run by the dynamic warm-up (service.core.dynamic.warmup) so that no
request's argument types reach a kernel for the first time."""

from __future__ import annotations

import numpy as np

from service.core.dynamic.spec import DynamicSpec
from service.core.dynamic.table import DynamicTable
from service.core.dynamic.warmup import TABLE, readonly
from service.core.initializers import InitSpec
from service.core.optimizers import OPTIMIZERS, make_optimizer
from service.core.table_base import DTYPES

SETTINGS = (DynamicSpec(), DynamicSpec(capacity=2, admit_after=2, evict="lfu", ttl_steps=1),
            DynamicSpec(capacity=2, evict="lru", ttl_steps=2))


def run_every_operation() -> None:
    ids = readonly(np.array([5, -3, 5, 2**40]))  # (4,)
    wide_ids = readonly(np.array([2**63 + 1, 7], dtype=np.uint64))
    for dtype in DTYPES:
        for kind in OPTIMIZERS:
            for settings in SETTINGS:
                table = DynamicTable(TABLE, 2, make_optimizer({"kind": kind}), dtype=dtype,
                                     init=InitSpec(), seed=0, settings=settings)
                grads = readonly(np.full((4, 2), 0.5, dtype=dtype))  # (4, 2)
                for _ in range(2):
                    table.push(ids, grads)
                    table.push(wide_ids, grads[:2], apply=True)
                    table.apply(average=True)
                table.lookup(ids)
                table.lookup(wide_ids, np.empty((2, 2), dtype=dtype))
                table.set_rows(readonly(np.array([9, 11])), readonly(np.ones((2, 2), dtype)))
                keys, rows, _ = table.export_rows()
                contents = table.capture()
                captured = table.captured_rows(contents.slots)
                table.push(ids, grads, apply=True)
                table.release()
                twin = DynamicTable(TABLE, 2, make_optimizer({"kind": kind}), dtype=dtype,
                                    seed=0, settings=settings)
                twin.restore(contents, captured)
                view = twin.row_view()
                for _ in view.blocks(2, np.empty((2, 2), dtype=dtype)):
                    pass
