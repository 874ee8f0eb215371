"""A prompt from a text file: accepted when it is UTF-8 text within the bound, one sentence otherwise."""
from __future__ import annotations

import pytest

from explorer.model.errors import BadArgument
from explorer.record.prompt_file import read_prompt_file


def test_utf8_text_is_read_and_a_byte_order_mark_dropped():
    text = "Le café — שלום\nline two"
    assert read_prompt_file("a.txt", text.encode()) == text
    assert read_prompt_file("a.txt", b"\xef\xbb\xbf" + text.encode()) == text


@pytest.mark.parametrize("data, words", [
    (b"abc\xff\xfedef", ["not UTF-8", "byte 3"]),
    (b"x" * 101, ["is 101 B", "at most 100 B"]),
    (b"  \n\t ", ["empty"]),
    (b"PK\x03\x04\x00\x00", ["binary"]),
])
def test_bad_files_get_one_clear_sentence(data, words):
    with pytest.raises(BadArgument) as info:
        read_prompt_file("doc.txt", data, max_bytes=100)
    message = str(info.value)
    assert message.startswith("doc.txt") and all(w in message for w in words), message
