"""The app's one way to write numbers, for text (tables of text, galleries, captions, metrics) and for the
widgets that format numbers themselves (Streamlit's NumberColumn, Plotly's axes, colour bars and hovers).

- Influences and changes of a metric (tiny, either sign): 3 significant digits, scientific, the exponent
  unpadded: -2.53e-4 (`sci`, `signed`; NumberColumn `SCI_FORMAT`; Plotly `SCI_AXIS`, `SCI_HOVER`).
- A metric's value: 4 significant digits, plain: 9.966, 7.300 (`value`; NumberColumn `VALUE_FORMAT`).
- A share: 2 significant digits, however small: 0.0031% (`percent`).
"""

from __future__ import annotations

import math
import re

SCI_FORMAT = "%.2e"  # st.column_config.NumberColumn (sprintf-js: -2.53e-4, as sci writes it)
VALUE_FORMAT = "%.4g"
SCI_HOVER = ".2e"  # Plotly hover / d3 format of one value: the digits of sci
# Axes and colour bars: ticks as 5e-5, 1.5e-4 (d3 '~e' trims zeros; Plotly's own exponent format writes
# '0.5e-4', its SI format '100μ'), zero as 0; hovers with sci's digits.
SCI_AXIS = dict(tickformat=".2~e", labelalias={"0e+0": "0"}, hoverformat=SCI_HOVER)
SCI_COLORBAR = dict(tickformat=SCI_AXIS["tickformat"], labelalias=SCI_AXIS["labelalias"])


def _finite(value) -> bool:
    return value is not None and math.isfinite(float(value))


def sci(value: float | None) -> str:
    """An influence or a change: '-7.66e-5' ('0.00e+0' for zero, as the tables write it); '?' when unknown."""
    if not _finite(value):
        return "?"
    return re.sub(r"e([+-])0*(\d)", r"e\1\2", f"{float(value):.2e}")


def signed(value: float | None) -> str:
    """sci with a '+' on positive values: where the direction of a change matters."""
    return ("+" if _finite(value) and value > 0 else "") + sci(value)


def value(v: float | None) -> str:
    """A metric's value with 4 significant digits, trailing zeros kept: '9.966', '7.300' (not '7.3')."""
    if not _finite(v):
        return "?"
    text = f"{float(v):#.4g}"
    return f"{float(v):.4g}" if "e" in text else text.rstrip(".")


def percent(share: float | None) -> str:
    """A share as a percentage with 2 significant digits: 0.00003 -> '0.003%' (not '0.00%')."""
    if not _finite(share):
        return "?"
    if share == 0:
        return "0%"
    digits = max(0, 1 - math.floor(math.log10(abs(share * 100))))
    return f"{share * 100:.{digits}f}%"
