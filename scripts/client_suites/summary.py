"""Summarise a client suite's JUnit XML report: one line of counts, then
every failed test and every skipped one with its reason.

usage: summary.py LABEL REPORT.xml   (exit 0 if nothing failed)
"""

import sys
import xml.etree.ElementTree as ET


def cases(root):
    for case in root.iter("testcase"):
        name = "::".join(p for p in (case.get("classname"), case.get("name")) if p)
        outcome, detail = "passed", ""
        for child in case:
            if child.tag in ("failure", "error"):
                outcome, detail = "failed", child.get("message") or ""
            elif child.tag == "skipped" and outcome == "passed":
                outcome, detail = "skipped", child.get("message") or ""
        yield name, outcome, detail


def main():
    label, path = sys.argv[1], sys.argv[2]
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        print(f"{label}: no report ({e})")
        return 1
    results = list(cases(root))
    count = {k: sum(1 for _, o, _ in results if o == k) for k in ("passed", "failed", "skipped")}
    if not results:
        print(f"{label}: no tests ran")
        return 1
    status = "FAIL" if count["failed"] else "ok  "
    print(f"{status} {label}: {count['passed']} passed, {count['failed']} failed, {count['skipped']} skipped")
    for name, outcome, detail in results:
        if outcome != "passed":
            line = detail.strip().splitlines()[0][:300] if detail.strip() else ""
            print(f"       {outcome}: {name}" + (f" — {line}" if line else ""))
    return 1 if count["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
