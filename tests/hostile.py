"""Counting hostile inputs: each test records what it tried, by kind and outcome.

`tried(kind, outcome)` adds one; the `hostile_counts` fixture of a test module prints
the module's table at its end (pytest -rA or -s shows it), and appends it to the file
named by $QNN_HOSTILE_COUNTS when set, so a report can quote the numbers.
"""
from __future__ import annotations

import collections
import os

import pytest

COUNTS: collections.Counter = collections.Counter()


def tried(kind: str, outcome: str) -> None:
    COUNTS[(kind, outcome)] += 1


def expect_error(kind, error, match, function, *args, **kwargs):
    """Call function(*args, **kwargs); it must raise `error` with a message matching."""
    with pytest.raises(error, match=match):
        function(*args, **kwargs)
    tried(kind, f"{error.__name__}")


@pytest.fixture(scope="module", autouse=True)
def hostile_counts(request):
    COUNTS.clear()
    yield COUNTS
    rows = [f"{kind:32s} {outcome:28s} {count:6d}" for (kind, outcome), count in sorted(COUNTS.items())]
    table = "\n".join([f"hostile inputs tried in {request.module.__name__}:"] + rows)
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("\n" + table)
    if os.environ.get("QNN_HOSTILE_COUNTS"):
        with open(os.environ["QNN_HOSTILE_COUNTS"], "a") as file:
            file.write(table + "\n")
