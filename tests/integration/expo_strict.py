"""A strict parser of the Prometheus text exposition format (version 0.0.4), written from the
format's description, to check what capsuled serves: every family has one HELP and one TYPE line
before its samples, its lines are contiguous, names and label names are valid, label values and
help texts use only the format's escapes (\\\\, \\", \\n), values are floats (or NaN, +Inf,
-Inf), no series appears twice, and the text ends with a newline. Anything else raises
ExpoError naming the line.

parse(text) -> {family: {"type": str, "help": str, "samples": [(name, {label: value}, float)]}}"""

import math
import re

METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}
SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}


class ExpoError(ValueError):
    pass


def _unescape(s, lineno, quoted):
    out, i = [], 0
    while i < len(s):
        c = s[i]
        if c == "\\":
            if i + 1 >= len(s):
                raise ExpoError(f"line {lineno}: dangling backslash")
            n = s[i + 1]
            if n == "\\":
                out.append("\\")
            elif n == "n":
                out.append("\n")
            elif n == '"' and quoted:
                out.append('"')
            else:
                raise ExpoError(f"line {lineno}: invalid escape \\{n}")
            i += 2
            continue
        if quoted and c == '"':
            raise ExpoError(f"line {lineno}: unescaped double quote in a label value")
        out.append(c)
        i += 1
    return "".join(out)


def _value(s, lineno):
    if s in ("NaN", "+Inf", "-Inf"):
        return float(s.replace("Inf", "inf").replace("NaN", "nan"))
    if not re.fullmatch(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?", s):
        raise ExpoError(f"line {lineno}: invalid value {s!r}")
    return float(s)


def _labels(s, lineno):
    """s is what is between the braces."""
    labels, i = {}, 0
    while i < len(s):
        m = re.match(r"([^=]*)=\"", s[i:])
        if not m:
            raise ExpoError(f"line {lineno}: expected NAME=\"VALUE\" at {s[i:]!r}")
        name = m.group(1)
        if not LABEL_NAME.match(name) or name.startswith("__"):
            raise ExpoError(f"line {lineno}: invalid label name {name!r}")
        if name in labels:
            raise ExpoError(f"line {lineno}: label {name} twice")
        j = i + m.end()
        raw = []
        while True:
            if j >= len(s):
                raise ExpoError(f"line {lineno}: unterminated label value")
            if s[j] == "\\":
                raw.append(s[j:j + 2])
                j += 2
                continue
            if s[j] == '"':
                break
            raw.append(s[j])
            j += 1
        labels[name] = _unescape("".join(raw), lineno, True)
        j += 1
        if j < len(s):
            if s[j] != ",":
                raise ExpoError(f"line {lineno}: expected ',' between labels")
            j += 1
        i = j
    return labels


def _family_of(name, families):
    if name in families:
        return name
    for fam, info in families.items():
        for suf in SUFFIXES.get(info["type"], ()):
            if name == fam + suf:
                return fam
    return None


def parse(text):
    if text and not text.endswith("\n"):
        raise ExpoError("the text does not end with a newline")
    families, seen_series, done, current = {}, set(), set(), None

    def enter(fam, lineno):
        nonlocal current
        if fam != current:
            if fam in done:
                raise ExpoError(f"line {lineno}: family {fam} continues after another family")
            if current is not None:
                done.add(current)
            current = fam

    for lineno, line in enumerate(text.split("\n")[:-1], 1):
        if line.strip() == "":
            continue
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[0] == "#" and parts[1] in ("HELP", "TYPE"):
                kind, name = parts[1], parts[2]
                rest = parts[3] if len(parts) > 3 else ""
                if not METRIC_NAME.match(name):
                    raise ExpoError(f"line {lineno}: invalid metric name {name!r}")
                enter(name, lineno)
                fam = families.setdefault(name, {"type": None, "help": None, "samples": []})
                if fam["samples"]:
                    raise ExpoError(f"line {lineno}: {kind} of {name} after its samples")
                if kind == "HELP":
                    if fam["help"] is not None:
                        raise ExpoError(f"line {lineno}: second HELP for {name}")
                    fam["help"] = _unescape(rest, lineno, False)
                else:
                    if fam["type"] is not None:
                        raise ExpoError(f"line {lineno}: second TYPE for {name}")
                    if rest not in TYPES:
                        raise ExpoError(f"line {lineno}: unknown type {rest!r}")
                    fam["type"] = rest
            continue  # other comments are allowed by the format
        m = re.match(r"([^{ ]+)(\{(.*)\})? (\S+)( (-?\d+))?\Z", line)
        if not m:
            raise ExpoError(f"line {lineno}: not a sample line: {line!r}")
        name, labels, value = m.group(1), m.group(3), m.group(4)
        if not METRIC_NAME.match(name):
            raise ExpoError(f"line {lineno}: invalid metric name {name!r}")
        fam = _family_of(name, families)
        if fam is None:
            raise ExpoError(f"line {lineno}: sample {name} without HELP and TYPE")
        if families[fam]["type"] is None or families[fam]["help"] is None:
            raise ExpoError(f"line {lineno}: family {fam} lacks a HELP or TYPE line")
        enter(fam, lineno)
        lab = _labels(labels, lineno) if labels else {}
        v = _value(value, lineno)
        if families[fam]["type"] == "counter" and (v < 0 or math.isnan(v)):
            raise ExpoError(f"line {lineno}: counter {name} is {value}")
        key = (name, tuple(sorted(lab.items())))
        if key in seen_series:
            raise ExpoError(f"line {lineno}: series {name}{lab} twice")
        seen_series.add(key)
        families[fam]["samples"].append((name, lab, v))
    for name, fam in families.items():
        if fam["type"] is None:
            raise ExpoError(f"family {name} has no TYPE line")
    return families


def series(families, name, **labels):
    """Values of the samples called name whose labels include labels."""
    fam = _family_of(name, families)
    if fam is None:
        return []
    return [v for n, lab, v in families[fam]["samples"]
            if n == name and all(lab.get(k) == want for k, want in labels.items())]
