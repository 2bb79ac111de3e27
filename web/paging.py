"""Paged lists on the dashboard, one shape: the page asked for (?page=N) and where the pager links go.
Every paged page (jobs, audit log, a webhook's deliveries) reads its page with `requested_page` and
hands a `Pager` to the `pager` macro (templates/_macros.html)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from web.inputs import MAX_PAGE, query_int


def requested_page() -> int:
    """?page=N, 1 when absent; out of 1..MAX_PAGE or not a number is a 400 naming `page`."""
    return query_int("page", 1, 1, MAX_PAGE) or 1


@dataclass(frozen=True)
class Pager:
    """Page `number` of a newest-first list of `total` rows, `per_page` a page."""

    number: int
    per_page: int
    total: int

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.per_page))

    @property
    def newer(self) -> int | None:
        """The page before; from past the end, the last page."""
        return min(self.number - 1, self.pages) if self.number > 1 else None

    @property
    def older(self) -> int | None:
        return self.number + 1 if self.number < self.pages else None
