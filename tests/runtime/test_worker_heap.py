"""The worker process's garbage-collector setting (issue 19)."""

from __future__ import annotations


def test_worker_freezes_its_startup_heap():
    """worker.freeze_startup_heap (issue 19): what is alive when the worker starts leaves the
    collector's reach; what is made later is collected as before."""
    import gc

    from worker import freeze_startup_heap

    freeze_startup_heap()
    try:
        assert gc.get_freeze_count() > 1000
        later = [object() for _ in range(3)] + [[]]  # a container made afterwards is tracked
        assert gc.is_tracked(later)
        assert any(o is later for o in gc.get_objects())
    finally:
        gc.unfreeze()
