"""Which jobs of a sweep's batch to compose before launching it (``hydra_plugins.losslab_sweeper``)."""

from __future__ import annotations

from typing import Sequence


def jobs_to_check(batch: Sequence[Sequence[str]]) -> list[list[str]]:
    """Few jobs of ``batch`` that together bring every override value of it, in the jobs' order: each time the job
    with the most values no chosen job has (the earliest on a tie), until none is left. Hydra's basic sweeper
    composes each job's config in the launching process to fail before any job starts; composing every value once
    finds what fails alone. The launcher's workers compose each job again to run it, so a value that breaks only
    in combination with another still fails there, in its job. For the default sweep (7 losses × 5 seeds): 7 of
    35 jobs — seed s with the s-th loss, then the two losses left."""
    jobs = [list(job) for job in batch]
    seen: set[str] = set()
    chosen: set[int] = set()
    while True:
        fresh = [len(set(job) - seen) for job in jobs]
        best = max(range(len(jobs)), key=lambda i: (fresh[i], -i), default=None)
        if best is None or fresh[best] == 0:
            return [jobs[i] for i in sorted(chosen)]
        chosen.add(best)
        seen.update(jobs[best])
