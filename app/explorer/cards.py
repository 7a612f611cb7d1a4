"""Cards of images (the gallery, its neighbours, a sample's responsible images, the generated samples): the grid
they stand in, and their text lines: long class names and file names shortened to the card's line, never broken
mid-word; the whole file path on hover."""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import PurePosixPath
from typing import Iterator

import streamlit as st

PADDING_PX = 32  # a bordered container's padding, 1 rem a side
# Widths measured in Chromium (Streamlit 1.67's Source Sans): file names of digits, capitals and underscores take
# 6.6-7.0 px a character in a caption, 7.4-7.8 in the body's bold heading; a little over both, so a line fits.
CAPTION_CHAR_PX = 7.5
HEADING_CHAR_PX = 8.3
HELP_PX = 24  # the caption's help icon and its gap
MARKDOWN = re.compile(r"([\\`*_\[\]<>$:~|#])")  # a file or folder named "*new*" or "$1$" is shown as named
FILLERS = 7  # invisible cards after a grid's last: up to 8 cards a line stay in their columns


@contextlib.contextmanager
def grid(card_px: int, key: str | None = None) -> Iterator:
    """A wrapping row of cards `card_px` wide, as many a line as the window holds, spread over the whole width
    (aligned left, the cards left a blank band up to a card wide at the right). The last line is padded with
    invisible cards of the same width (1 px high), so its cards stand in the columns of the lines above."""
    row = st.container(horizontal=True, gap="small", horizontal_alignment="distribute", key=key)
    yield row
    for _ in range(FILLERS):
        row.container(width=card_px, height=1, border=False)


def fit(text: str, chars: int) -> str:
    """`text` in at most `chars` characters: a part after its first third left out for an ellipsis, so a file's
    start, and the number before its extension, stay."""
    if len(text) <= chars:
        return text
    head = (chars - 1) // 3
    return text[:head] + "…" + text[len(text) - (chars - 1 - head):]


def plain(text: str) -> str:
    """`text` as Markdown that shows it as it is (Streamlit also reads :emoji: and $LaTeX$)."""
    return MARKDOWN.sub(r"\\\1", text)


def heading(text: str, label: str | None, card_px: int) -> None:
    """The card's first line, "**#12** · label"; a label longer than that line goes on a line of its own, shortened
    to it where it is longer still (the whole name is in the class filter)."""
    room = int((card_px - PADDING_PX) / HEADING_CHAR_PX)
    if label is None or len(text) + 3 + len(label) <= room:
        st.markdown(f"**{text}**" + (f" · {plain(label)}" if label else ""))
        return
    st.markdown(f"**{text}**")
    st.caption(plain(fit(label, int((card_px - PADDING_PX) / CAPTION_CHAR_PX))))


SPAN_CHARS = 5  # what tells two names apart is shown with the characters before it up to this many ("00436")


def fit_around(text: str, chars: int, start: int, end: int) -> str:
    """`text` in at most `chars` characters keeping text[start:end] (what tells it from other names; its beginning
    where it is longer than the line), then as much of the text's start and end (the extension) as the line holds;
    an ellipsis where a part is left out."""
    if len(text) <= chars:
        return text
    start = max(0, min(start, end - SPAN_CHARS))
    left = text[:start]
    cut_left = int(bool(left))  # an ellipsis at least, for each side that is not shown whole
    cut_right = int(end < len(text) or end - start > chars - cut_left)
    span = text[start:start + min(end - start, chars - cut_left - cut_right)]
    right = text[start + len(span):]
    room = chars - len(span)
    n_right = min(len(right), max(cut_right, room - min(len(left), room // 2)))
    n_left = min(len(left), room - n_right)  # a short end leaves the start the rest
    head = left if len(left) <= n_left else left[: n_left - 1] + "…"
    tail = right if len(right) <= n_right else "…" + right[len(right) - n_right + 1:]
    return head + span + tail


def shown_names(paths: list[str], card_px: int) -> list[str]:
    """The file names as a gallery's cards `card_px` wide show them, on one line beside the help icon: shortened
    (`fit`), and where two would read the same (a camera's "IMG2…nced.png": its names differ in the middle) each
    keeping the part that tells it from those it would be read as (`fit_around`)."""
    chars = int((card_px - PADDING_PX - HELP_PX) / CAPTION_CHAR_PX)
    names = [PurePosixPath(p).name for p in paths]
    shown = [fit(n, chars) for n in names]
    out = []
    for name, short in zip(names, shown):
        alike = [o for o, s in zip(names, shown) if s == short and o != name]
        if alike:
            start = max(len(os.path.commonprefix([name, o])) for o in alike)
            end = len(name) - max(len(os.path.commonprefix([name[::-1], o[::-1]])) for o in alike)
            # a second ellipsis: one character less (an ellipsis is about two wide; 13 wrapped the help icon)
            short = fit_around(name, chars - 1, start, end) if start < end else short
        out.append(short)
    return out


def file_line(path: str, shown: str) -> None:
    """The image's file: its name as `shown_names` shows it, the path relative to the data folder on hover."""
    st.caption(plain(shown), help=plain(path))
