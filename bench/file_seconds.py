"""Seconds per test file of a whole run, the table FILE_SECONDS in tests/conftest.py (the longest file first).

    make test PYTEST_ARGS=--junitxml=/tmp/suite.xml
    python bench/file_seconds.py /tmp/suite.xml

A test case's time in the JUnit XML is its setup, call and teardown: a module fixture counts in its file's first
test. Prints the table's lines, longest first, and what two workers that always take the next file would take.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from collections import Counter


def file_seconds(junit_xml: str) -> Counter[str]:
    seconds: Counter[str] = Counter()
    for case in ET.parse(junit_xml).iter("testcase"):
        # classname: tests.test_x (or tests.test_x.TestClass): the module is the part that starts with test_
        module = next(part for part in case.get("classname", "").split(".") if part.startswith("test_"))
        seconds[f"{module}.py"] += float(case.get("time", "0"))
    return seconds


def two_workers(seconds: list[float]) -> float:
    """When the last of two workers ends if each takes the next file in this order as soon as it is free."""
    ends = [0.0, 0.0]
    for cost in seconds:
        ends[ends.index(min(ends))] += cost
    return max(ends)


def main(junit_xml: str) -> None:
    seconds = file_seconds(junit_xml)
    for name, cost in seconds.most_common():
        print(f'    "{name}": {cost:.0f},')
    longest_first = [cost for _, cost in seconds.most_common()]
    alphabetical = [seconds[name] for name in sorted(seconds)]
    print(f"# all files: {sum(longest_first):.0f} s of test time; two workers, longest first: "
          f"{two_workers(longest_first):.0f} s, alphabetical: {two_workers(alphabetical):.0f} s")


if __name__ == "__main__":
    main(sys.argv[1])
