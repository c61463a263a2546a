"""``partition_by: [{field, transform}]`` as pyiceberg transforms."""
from __future__ import annotations

import re

__all__ = ["transform"]


def transform(name: str):
    from pyiceberg.transforms import (BucketTransform, DayTransform, HourTransform, IdentityTransform,
                                      MonthTransform, TruncateTransform, YearTransform)

    m = re.fullmatch(r"(bucket|truncate)\[(\d+)\]", name)
    if m:
        return (BucketTransform if m[1] == "bucket" else TruncateTransform)(int(m[2]))
    return {"identity": IdentityTransform, "year": YearTransform, "month": MonthTransform,
            "day": DayTransform, "hour": HourTransform}[name]()

