"""A strict reading of RFC 5545 for the calendars we produce, written from the RFC: line form
(CRLF, 75-octet folding), component nesting, required and single-use properties of VCALENDAR,
VEVENT and VTIMEZONE, value forms, and every TZID referenced being defined."""

from __future__ import annotations

import re

NAME = re.compile(r"^(?:[A-Za-z0-9-]+)$")
DATE_TIME = re.compile(r"^\d{8}T\d{6}Z?$")
OFFSET = re.compile(r"^[+-]\d{4}(\d{2})?$")


def _unfold(raw: bytes) -> list[str]:
    assert raw.endswith(b"\r\n"), "content lines end with CRLF"
    lines = raw.split(b"\r\n")[:-1]
    out: list[str] = []
    for line in lines:
        assert b"\n" not in line and b"\r" not in line, "bare LF or CR inside a line"
        assert len(line) <= 75, f"line longer than 75 octets: {line[:40]!r}"
        if line[:1] in (b" ", b"\t"):
            assert out, "a folded line with nothing before it"
            out[-1] += line[1:].decode()
        else:
            out.append(line.decode())
    return out


def _split(line: str) -> tuple[str, dict[str, str], str]:
    head, _, value = line.partition(":")
    # a colon inside a quoted parameter value belongs to the head
    while head.count('"') % 2:
        more, _, value = value.partition(":")
        head += ":" + more
    name, *params = head.split(";")
    assert NAME.match(name), f"bad property name {name!r}"
    parsed = {}
    for p in params:
        k, _, v = p.partition("=")
        assert NAME.match(k) and v, f"bad parameter {p!r}"
        parsed[k.upper()] = v.strip('"')
    return name.upper(), parsed, value


def check_rfc5545(raw: bytes) -> None:
    lines = _unfold(raw)
    stack: list[dict] = []
    root: dict | None = None
    for line in lines:
        name, params, value = _split(line)
        if name == "BEGIN":
            comp = {"name": value.upper(), "props": [], "children": []}
            if stack:
                stack[-1]["children"].append(comp)
            else:
                assert root is None, "one VCALENDAR per stream here"
                root = comp
            stack.append(comp)
        elif name == "END":
            assert stack and stack[-1]["name"] == value.upper(), f"END:{value} does not close {stack[-1]['name']}"
            stack.pop()
        else:
            assert stack, f"property {name} outside any component"
            stack[-1]["props"].append((name, params, value))
    assert not stack and root is not None and root["name"] == "VCALENDAR"

    def once(comp: dict, prop: str, required: bool = True) -> str | None:
        found = [v for n, _, v in comp["props"] if n == prop]
        assert len(found) <= 1, f"{prop} more than once in {comp['name']}"
        assert found or not required, f"{prop} missing in {comp['name']}"
        return found[0] if found else None

    once(root, "PRODID")
    assert once(root, "VERSION") == "2.0"
    once(root, "CALSCALE", required=False)
    once(root, "METHOD", required=False)
    tzids = set()
    used = set()
    for comp in root["children"]:
        if comp["name"] == "VTIMEZONE":
            tzids.add(once(comp, "TZID"))
            assert comp["children"], "a VTIMEZONE needs STANDARD or DAYLIGHT"
            for sub in comp["children"]:
                assert sub["name"] in ("STANDARD", "DAYLIGHT")
                assert DATE_TIME.match(once(sub, "DTSTART") or "")
                assert OFFSET.match(once(sub, "TZOFFSETFROM") or "")
                assert OFFSET.match(once(sub, "TZOFFSETTO") or "")
        elif comp["name"] == "VEVENT":
            once(comp, "UID")
            stamp = once(comp, "DTSTAMP") or ""
            assert DATE_TIME.match(stamp) and stamp.endswith("Z"), "DTSTAMP is UTC"
            start = once(comp, "DTSTART")
            end = once(comp, "DTEND", required=False)
            assert not (end and once(comp, "DURATION", required=False)), "DTEND and DURATION together"
            for n, params, v in comp["props"]:
                if "TZID" in params:
                    used.add(params["TZID"])
                    assert not v.endswith("Z"), "a UTC time with a TZID"
                if n in ("DTSTART", "DTEND"):
                    assert DATE_TIME.match(v), f"{n} value {v!r}"
            if end:
                assert end > (start or ""), "DTEND after DTSTART"  # same zone here: compare as text
            seq = once(comp, "SEQUENCE", required=False)
            assert seq is None or (seq.isdigit()), "SEQUENCE is a non-negative integer"
            status = once(comp, "STATUS", required=False)
            assert status in (None, "TENTATIVE", "CONFIRMED", "CANCELLED")
            assert not comp["children"] or all(c["name"] == "VALARM" for c in comp["children"])
        else:
            raise AssertionError(f"unexpected component {comp['name']}")
    assert used <= tzids, f"TZID used without its VTIMEZONE: {used - tzids}"
