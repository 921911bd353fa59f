"""Field types shared by every API: dates and times only as ISO 8601 text.

Pydantic also reads a bare number as a Unix time (`to=0.5`, `dates: [0]` became 1970-01-01);
a booking system should never guess that, so numbers are refused with a message that says what
to write instead."""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Any

from pydantic import AwareDatetime, BeforeValidator

_NUMBER = re.compile(r"\s*[-+]?\d+(\.\d*)?([eE][-+]?\d+)?\s*")


def _iso_only(value: Any) -> Any:
    if (
        isinstance(value, bool)
        or isinstance(value, int | float)
        or (isinstance(value, str) and _NUMBER.fullmatch(value))
    ):
        raise ValueError("write dates and times in ISO 8601 (2026-12-01 or 2026-12-01T18:00:00+01:00), not as numbers")
    return value


IsoDateTime = Annotated[AwareDatetime, BeforeValidator(_iso_only)]
IsoDate = Annotated[date, BeforeValidator(_iso_only)]
