"""A page holds as many resources as fit a response, and spends no work on those it does not send."""

from __future__ import annotations

from google.protobuf.wrappers_pb2 import BytesValue

from hishamos_kit.listing import MAX_PAGE_BYTES, Page


def test_a_page_makes_messages_only_of_the_rows_it_sends() -> None:
    """A thousand documents with 60 KB of metadata each took knowledge 15 s of its event loop to turn into
    messages, to send the 36 that fit: the rows past a full page are never made messages."""
    rows = list(range(1000))
    made: list[int] = []

    def message(row: int) -> BytesValue:
        made.append(row)
        return BytesValue(value=b"x" * (MAX_PAGE_BYTES // 10))

    sent, token = Page(rows, "after the last row", lambda row: f"after {row}").fit(message(row) for row in rows)
    assert len(sent) == 9 and token == "after 8"  # ten would pass the limit by their headers
    assert made == rows[:10]  # the tenth, made to learn it does not fit, and no more
    small = Page(rows[:5], "after the last row", lambda row: f"after {row}")
    assert small.fit(BytesValue(value=b"x") for _ in range(5)) == ([BytesValue(value=b"x")] * 5, "after the last row")
