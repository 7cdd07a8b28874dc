#!/usr/bin/env python3
"""The strict exposition-format parser the metrics tests use (tests/integration/expo_strict.py)
accepts valid pages and rejects each kind of mistake; without this, a parser that accepted
everything would make those tests prove nothing."""

import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration"))
import expo_strict  # noqa: E402
from expo_strict import ExpoError, parse  # noqa: E402

GOOD = """# HELP capsule_api_calls_total API calls by method.
# TYPE capsule_api_calls_total counter
capsule_api_calls_total{method="/capsule.v1.System/Version"} 3
capsule_api_calls_total{method="/capsule.v1.Workloads/Get"} 0
# HELP m a \\\\ b\\nc "q"
# TYPE m gauge
m{a="x\\\\y",b="say \\"hi\\"",c="l1\\nl2",} 1.5e3
m{a="other"} NaN
m +Inf 1700000000000
"""


class StrictParserTest(unittest.TestCase):
    def test_good(self):
        f = parse(GOOD)
        self.assertEqual(f["capsule_api_calls_total"]["type"], "counter")
        self.assertEqual(f["m"]["help"], 'a \\ b\nc "q"')
        self.assertEqual(expo_strict.series(f, "capsule_api_calls_total",
                                            method="/capsule.v1.System/Version"), [3.0])
        lab = f["m"]["samples"][0][1]
        self.assertEqual(lab, {"a": "x\\y", "b": 'say "hi"', "c": "l1\nl2"})
        self.assertEqual(f["m"]["samples"][0][2], 1500.0)

    def test_bad(self):
        T = "# HELP x h\n# TYPE x gauge\n"
        bad = {
            "no final newline": T + "x 1",
            "sample without TYPE": "x 1\n",
            "TYPE missing": "# HELP x h\nx 1\n",
            "HELP missing": "# TYPE x gauge\nx 1\n",
            "unknown type": "# HELP x h\n# TYPE x meter\nx 1\n",
            "second TYPE": T + "# TYPE x gauge\nx 1\n",
            "TYPE after samples": "# HELP x h\n# TYPE x gauge\nx 1\n# HELP x again\n",
            "bad metric name": "# HELP 1x h\n# TYPE 1x gauge\n1x 1\n",
            "bad label name": T + 'x{a-b="1"} 1\n',
            "reserved label": T + 'x{__name__="1"} 1\n',
            "duplicate label": T + 'x{a="1",a="2"} 1\n',
            "bad escape": T + 'x{a="\\t"} 1\n',
            "raw quote": T + 'x{a="say "hi""} 1\n',
            "unterminated": T + 'x{a="1} 1\n',
            "bad value": T + "x one\n",
            "hex value": T + "x 0x10\n",
            "duplicate series": T + 'x{a="1"} 1\nx{a="1"} 2\n',
            "split family": T + "x 1\n# HELP y h\n# TYPE y gauge\ny 1\nx{a=\"2\"} 2\n",
            "negative counter": "# HELP c h\n# TYPE c counter\nc -1\n",
            "no space before value": T + 'x{a="1"}1\n',
            "bad help escape": "# HELP x a\\qb\n# TYPE x gauge\nx 1\n",
        }
        for why, text in bad.items():
            with self.subTest(why):
                with self.assertRaises(ExpoError):
                    parse(text)


if __name__ == "__main__":
    unittest.main(verbosity=2)
