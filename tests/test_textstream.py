from hypothesis import given
from hypothesis import strategies as st

from steadytext_async._textstream import TextAssembler


def run(chunks: list[bytes], stop: str | None = None) -> tuple[list[str], TextAssembler]:
    asm = TextAssembler(stop)
    out = []
    for i, data in enumerate(chunks):
        piece = asm.feed(i, data)
        if piece is not None and piece.text:
            out.append(piece.text)
        if asm.stopped:
            break
    piece = asm.finish()
    if piece is not None and piece.text:
        out.append(piece.text)
    return out, asm


def test_multibyte_character_split_across_tokens_is_held_until_complete() -> None:
    robot = "🤖".encode()
    pieces, asm = run([b"a", robot[:1], robot[1:3], robot[3:], b"b"])
    assert pieces == ["a", "🤖", "b"]
    assert asm.text == "a🤖b"


def test_stop_string_is_cut_and_not_included() -> None:
    pieces, asm = run([b"hello ", b"wor", b"ld", b" more"], stop="world")
    assert "".join(pieces) == "hello "
    assert asm.stopped


def test_stop_string_prefix_is_held_then_released_when_it_diverges() -> None:
    pieces, asm = run([b"ab", b"c", b"x"], stop="cd")
    assert "".join(pieces) == "abcx"
    assert not asm.stopped
    # "c" could start "cd", so it is not released with "ab"
    assert pieces[0] == "ab"


def test_incomplete_trailing_bytes_become_replacement_char() -> None:
    pieces, _ = run([b"ok", "é".encode()[:1]])
    assert "".join(pieces) == "ok\ufffd"


@given(st.text(min_size=0, max_size=40), st.lists(st.integers(1, 7), min_size=1, max_size=20))
def test_any_byte_split_joins_to_the_original_text(text: str, sizes: list[int]) -> None:
    data = text.encode()
    chunks, i, k = [], 0, 0
    while i < len(data):
        n = sizes[k % len(sizes)]
        chunks.append(data[i : i + n])
        i += n
        k += 1
    pieces, _ = run(chunks)
    assert "".join(pieces) == text
    for p in pieces:
        assert "\ufffd" not in p or "\ufffd" in text


@given(st.text(alphabet="abc", max_size=30), st.text(alphabet="abc", min_size=1, max_size=3))
def test_stop_string_semantics_match_str_find(text: str, stop: str) -> None:
    pieces, asm = run([c.encode() for c in text], stop=stop)
    expected = text[: text.find(stop)] if stop in text else text
    assert "".join(pieces) == expected
    assert asm.stopped == (stop in text)


def test_pieces_feeds_a_sequence_up_to_the_stop_string() -> None:
    asm = TextAssembler("END")
    tokens = [b"a", b"\xc3", b"\xa9", b" E", b"N", b"D", b"never fed"]
    pieces = list(asm.pieces(tokens))
    assert [(p.text, p.token_indices) for p in pieces] == [("a", [0]), ("é", [1, 2]), (" ", [3])]
    assert asm.stopped and asm.fed == 6 and asm.text == "aé "
    whole = TextAssembler(None)
    assert "".join(p.text for p in whole.pieces([b"x", b"\xe2\x82"])) == "x\ufffd" and whole.fed == 2
