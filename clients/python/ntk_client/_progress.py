"""Showing a running job's progress: a tqdm bar, the caller's own callback, or nothing."""

from __future__ import annotations

import sys
from typing import Any, Callable, Union

from ._models import Job

#: None: a bar when stderr is a terminal (and tqdm is installed); True: a bar anyway;
#: False: nothing; a callable: called with every Job state seen while waiting.
ProgressSetting = Union[bool, None, Callable[[Job], Any]]


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


class JobProgress:
    def __init__(self, setting: ProgressSetting, job: Job) -> None:
        self._callback = setting if callable(setting) else None
        self._bar = None
        wants_bar = setting is True or (setting is None and _stderr_is_terminal())
        if self._callback is None and wants_bar:
            try:
                from tqdm.auto import tqdm
            except ImportError:  # tqdm is optional; without it, jobs run silently
                tqdm = None
            if tqdm is not None:
                self._bar = tqdm(total=job.progress.total or None, desc=f"{job.kind or 'job'} {job.id[:8]}", unit="tile")
        self.update(job)

    def update(self, job: Job) -> None:
        if self._callback is not None:
            self._callback(job)
        if self._bar is not None:
            done, total = job.progress
            if total and self._bar.total != total:
                self._bar.total = total
            self._bar.n = done
            self._bar.set_postfix_str(job.status, refresh=False)
            self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
