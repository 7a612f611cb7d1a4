"""The text lines of a training image's card (the gallery, its neighbours, a sample's responsible images): long class
names and file names shortened to the card's line, never broken mid-word; the whole file path on hover."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

import streamlit as st

PADDING_PX = 32  # a bordered container's padding, 1 rem a side
# Widths measured in Chromium (Streamlit 1.67's Source Sans): file names of digits, capitals and underscores take
# 6.6-7.0 px a character in a caption, 7.4-7.8 in the body's bold heading; a little over both, so a line fits.
CAPTION_CHAR_PX = 7.5
HEADING_CHAR_PX = 8.3
HELP_PX = 24  # the caption's help icon and its gap
MARKDOWN = re.compile(r"([\\`*_\[\]<>$:~|#])")  # a file or folder named "*new*" or "$1$" is shown as named


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


def shown_name(path: str, card_px: int) -> str:
    """The file's name as a card `card_px` wide shows it: on one line beside the help icon (shortened, `fit`)."""
    return fit(PurePosixPath(path).name, int((card_px - PADDING_PX - HELP_PX) / CAPTION_CHAR_PX))


def file_line(path: str, card_px: int) -> None:
    """The image's file: its name on one line, the path relative to the data folder on hover."""
    st.caption(plain(shown_name(path, card_px)), help=plain(path))
