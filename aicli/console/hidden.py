"""Characters a person cannot see, made visible where a person decides: ``<U+202E>``.

Why: an approval can lie. Claude proposed ``echo hi <U+202E><U+2066>; touch PWNED<U+2069> # x``;
drawn, the override and the isolates turned ``touch PWNED`` into what reads as part of a
comment, and Allow ran it. The CLI refuses C0 controls in a command, not these. So every
string of a tool's input (keys too) that a person decides on shows each such character as
``<U+XXXX>``, under a warning, never stripped: what is allowed is exactly what was shown,
made visible. The data itself is not changed.

Which characters are hidden (``is_hidden``), the same set as the dashboard's
(``aicli/http/ui/hidden.js``, which names it with Unicode properties):

- the general categories Cc (controls, but ``\\t`` and ``\\n``, which show as what they
  are), Cf (format: the bidi embeddings, overrides, isolates and marks, the zero-width
  spaces and joiners, the BOM, the soft hyphen, the tag characters U+E0000–E007F, ...),
  Zl and Zp (U+2028, U+2029: a line break to a browser, not to a shell), Cs (a lone
  surrogate), Co (private use: no agreed glyph) and Cn (unassigned);
- the other default-ignorable code points (Unicode's Default_Ignorable_Code_Point), which
  are drawn as nothing: the Hangul fillers, the combining grapheme joiner, the variation
  selectors, the Mongolian free variation selectors, the Khmer inherent vowels.

Not hidden: spaces other than U+0020 and letters that look alike. They are seen, if
misread; a font cannot tell them apart, and flagging all of them would cry wolf on
ordinary text.

The visible form is reversible (``unveiled``): a ``<`` that would begin what reads as a
marker (``<U+0041>`` typed as such) is itself shown as ``<U+003C>``, so text can neither
fake a marker nor pass one off as typed.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from typing import Any

HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})
# Default_Ignorable_Code_Point outside those categories (DerivedCoreProperties.txt).
DEFAULT_IGNORABLE_RANGES = (
    (0x034F, 0x034F),  # COMBINING GRAPHEME JOINER
    (0x115F, 0x1160),  # HANGUL CHOSEONG FILLER, HANGUL JUNGSEONG FILLER
    (0x17B4, 0x17B5),  # KHMER VOWEL INHERENT AQ, AA
    (0x180B, 0x180D),  # MONGOLIAN FREE VARIATION SELECTOR ONE..THREE
    (0x180F, 0x180F),  # MONGOLIAN FREE VARIATION SELECTOR FOUR
    (0x3164, 0x3164),  # HANGUL FILLER
    (0xFE00, 0xFE0F),  # VARIATION SELECTOR-1..16
    (0xFFA0, 0xFFA0),  # HALFWIDTH HANGUL FILLER
    (0xE0100, 0xE01EF),  # VARIATION SELECTOR-17..256
)
DEFAULT_IGNORABLE = frozenset(
    chr(code) for first, last in DEFAULT_IGNORABLE_RANGES for code in range(first, last + 1)
)
SEEN_AS_THEY_ARE = frozenset("\t\n")

WARNING = (
    "the input contains hidden or direction-changing characters, shown as <U+XXXX>; "
    "they stay in what is allowed"
)
# A typed "<" that begins a marker's shape.
LOOKALIKE = re.compile(r"<(?=[Uu]\+[0-9A-Fa-f]{4,6}>)")
MARKER = re.compile(r"<U\+([0-9A-F]{4,6})>")


def is_hidden(char: str) -> bool:
    """Whether ``char`` (one character) is drawn as nothing, or moves the text around it."""
    if char in SEEN_AS_THEY_ARE:
        return False
    return unicodedata.category(char) in HIDDEN_CATEGORIES or char in DEFAULT_IGNORABLE


def marker(char: str) -> str:
    return f"<U+{ord(char):04X}>"


def _markers(text: str) -> dict[int, str]:
    """Each hidden character of ``text`` to its marker: found from the set of its
    characters, so a long text is read at C's speed."""
    return {ord(char): marker(char) for char in set(text) if is_hidden(char)}


def visible(text: str) -> str:
    """``text`` with each hidden character (and a ``<`` that could pass for a marker's)
    as ``<U+XXXX>``; everything else, ``\\t`` and ``\\n`` included, as it was."""
    text = LOOKALIKE.sub("<U+003C>", text)  # first: the markers added next are not typed
    return text.translate(_markers(text))


def _character(found: re.Match[str]) -> str:
    code = int(found.group(1), 16)
    return chr(code) if code <= 0x10FFFF else found.group()


def unveiled(text: str) -> str:
    """The inverse of ``visible``: each ``<U+XXXX>`` back to its character, so that a
    person can type what they were shown (``aicli approvals answer``)."""
    return MARKER.sub(_character, text)


def strings(value: Any) -> Iterator[str]:
    """Every string in a JSON value: keys, values, nested at any depth."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from strings(key)
            yield from strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from strings(item)


def revealed(value: Any) -> Any:
    """A JSON value with every string in it (keys too) ``visible``."""
    if isinstance(value, str):
        return visible(value)
    if isinstance(value, dict):
        return {revealed(key): revealed(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [revealed(item) for item in value]
    return value


def hidden_in(*values: Any) -> list[str]:
    """The distinct hidden characters in the strings of ``values``, by code point."""
    found: set[str] = set()
    for value in values:
        for text in strings(value):
            found.update(map(chr, _markers(text)))
    return sorted(found)


def warning(*values: Any) -> str | None:
    """The warning for ``values``, naming the hidden characters in them; None when none."""
    found = hidden_in(*values)
    if not found:
        return None
    names = [f"U+{ord(char):04X} {unicodedata.name(char, '')}".rstrip() for char in found[:8]]
    more = f" and {len(found) - 8} more" if len(found) > 8 else ""
    return f"{WARNING} ({', '.join(names)}{more})"
