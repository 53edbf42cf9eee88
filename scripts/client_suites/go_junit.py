"""Turn `go test -json` (stdin) into a JUnit XML report, echoing the tests'
output for the log. Tests the caller left out of `-run` are reported as
skipped with their reason.

usage: go test -json ... | go_junit.py REPORT.xml [--skipped NAME=REASON]...
"""

import json
import sys
import xml.etree.ElementTree as ET


def main():
    report, args = sys.argv[1], sys.argv[2:]
    skipped = {}
    while args:
        flag, entry, args = args[0], args[1], args[2:]
        assert flag == "--skipped", flag
        name, reason = entry.split("=", 1)
        skipped[name] = reason
    outcome, output = {}, {}
    for line in sys.stdin:
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            sys.stdout.write(line)
            continue
        test, action = event.get("Test"), event.get("Action")
        if action == "output":
            sys.stdout.write(event.get("Output", ""))
            if test:
                output.setdefault(test, []).append(event.get("Output", ""))
        elif test and action in ("pass", "fail", "skip"):
            outcome[test] = action
        elif test and action == "run":
            outcome.setdefault(test, "fail")  # a test that never ends failed
    suite = ET.Element("testsuite", name="go")
    for test, result in outcome.items():
        case = ET.SubElement(suite, "testcase", classname="go", name=test)
        if result == "fail":
            ET.SubElement(case, "failure", message="".join(output.get(test, []))[-500:])
        elif result == "skip":
            ET.SubElement(case, "skipped", message="".join(output.get(test, [])).strip())
    for test, reason in skipped.items():
        case = ET.SubElement(suite, "testcase", classname="go", name=test)
        ET.SubElement(case, "skipped", message=reason)
    root = ET.Element("testsuites")
    root.append(suite)
    ET.ElementTree(root).write(report, encoding="utf-8", xml_declaration=True)


if __name__ == "__main__":
    main()
