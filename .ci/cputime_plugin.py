"""A pytest plugin that records each test's wall and CPU seconds (this process plus the children it waited
for) as JSON lines in $CPUTIME_OUT, with the load average: on a shared machine the CPU time says what a
test costs when wall times do not. Used to decide which tests are ``slow``:

    CPUTIME_OUT=cpu.jsonl PYTHONPATH=.ci python -m pytest -q -p cputime_plugin
"""

import json
import os
import resource
import time

import pytest


def _cpu() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    wall, cpu = time.perf_counter(), _cpu()
    yield
    row = {"id": item.nodeid, "wall": time.perf_counter() - wall, "cpu": _cpu() - cpu, "load": os.getloadavg()[0]}
    with open(os.environ["CPUTIME_OUT"], "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
