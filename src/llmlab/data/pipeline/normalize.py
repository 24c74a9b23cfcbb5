"""Normalisers: make equal text look equal before anything counts or hashes it.

- `normalize` (one stage, each step switchable): mojibake repair with ftfy's `fix_encoding` ("doesnâ€™t" ->
  "doesn’t"; only the encoding fix, not `fix_text`, which would also straighten curly quotes and unescape
  HTML: choices a cleaning pipeline should make on purpose), Unicode normalisation (NFC composes "e" +
  U+0301 into "é"; NFKC also folds compatibility forms: "ﬁ" -> "fi", full-width "Ａ" -> "A"), control
  characters (C0/C1 except tab and newline; a lone CR becomes a newline) and whitespace.
- `regex`: configurable rules, each either a replacement (`{pattern, replace}`) or a drop
  (`{pattern, drop = true}`: documents matching it are removed, counted under the pattern).

Whitespace has three modes because code and prose want different things: `lines` (the default) strips
trailing spaces, turns CRLF into LF and squeezes runs of more than two blank lines to two, leaving indentation (and a
file's final newline) alone;
`collapse` also squeezes runs of spaces and tabs inside lines (web prose); `none` leaves it all.
"""

import dataclasses
import unicodedata
from functools import lru_cache

import regex

from llmlab.data.pipeline.stage import Doc, DocStage, StageStats

# C0 and C1 control characters, DEL, except \t and \n (\r is handled first: CRLF -> LF, lone CR -> LF)
CONTROL = regex.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
TRAILING = regex.compile(r"[ \t]+$", regex.MULTILINE)
BLANK_RUNS = regex.compile(r"\n{4,}")  # more than two blank lines: PEP 8 code has two
INNER_SPACE = regex.compile(r"[ \t\u00a0\u2000-\u200a\u3000]+")
UNICODE_FORMS = ("NFC", "NFKC", "NFD", "NFKD", "none")
WHITESPACE_MODES = ("lines", "collapse", "none")


def fix_mojibake(text: str) -> str:
    """UTF-8 read as Windows-1252 and similar, undone: 'cafÃ©' -> 'café'."""
    import ftfy

    return ftfy.fix_encoding(text)


def remove_control(text: str) -> str:
    """'a\\r\\nb\\x00c\\rd' -> 'a\\nbc\\nd': line breaks to LF, other control characters removed."""
    return CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))


def normalize_whitespace(text: str, mode: str = "lines") -> str:
    """'  a  b \\n\\n\\n\\n\\nc\\n' -> '  a  b\\n\\n\\nc\\n' (lines) or ' a b\\n\\n\\nc\\n' (collapse)."""
    if mode == "none":
        return text
    if mode == "collapse":
        text = INNER_SPACE.sub(" ", text)
    text = TRAILING.sub("", text.replace("\r\n", "\n"))
    return BLANK_RUNS.sub("\n\n\n", text)


@dataclasses.dataclass
class Normalize(DocStage):
    name = "normalize"
    unicode: str = "NFC"
    mojibake: bool = True
    control: bool = True
    whitespace: str = "lines"

    def check(self) -> None:
        if self.unicode not in UNICODE_FORMS:
            raise ValueError(f"unicode {self.unicode!r}: must be one of {', '.join(UNICODE_FORMS)}")
        if self.whitespace not in WHITESPACE_MODES:
            raise ValueError(f"whitespace {self.whitespace!r}: must be one of {', '.join(WHITESPACE_MODES)}")

    def apply(self, doc: Doc, stats: StageStats) -> Doc | None:
        text = doc["text"]
        steps = [("mojibake fixed", self.mojibake, fix_mojibake),
                 (f"{self.unicode} changed text", self.unicode != "none",
                  lambda t: unicodedata.normalize(self.unicode, t)),
                 ("control characters removed", self.control, remove_control),
                 ("whitespace changed", self.whitespace != "none",
                  lambda t: normalize_whitespace(t, self.whitespace))]
        for counter, enabled, step in steps:
            if enabled:
                new = step(text)
                if new != text:
                    stats.counters[counter] += 1
                    if counter == "mojibake fixed":
                        stats.example(counter, {"id": doc["id"], "text": new})
                    text = new
        if not text.strip():
            stats.drop(doc, "empty after normalisation")
            return None
        return doc if text == doc["text"] else {**doc, "text": text}


@lru_cache(maxsize=64)
def _compiled(pattern: str) -> regex.Pattern:
    return regex.compile(pattern, regex.MULTILINE)


@dataclasses.dataclass
class RegexRules(DocStage):
    name = "regex"
    rules: list[dict] = dataclasses.field(default_factory=list)

    def check(self) -> None:
        for i, rule in enumerate(self.rules):
            if not isinstance(rule, dict) or not isinstance(rule.get("pattern"), str):
                raise ValueError(f"rules[{i}]: each rule is a table with a string 'pattern'")
            unknown = set(rule) - {"pattern", "replace", "drop"}
            if unknown or ("replace" in rule) == bool(rule.get("drop")):
                raise ValueError(f"rules[{i}]: give exactly one of 'replace' (a string) or 'drop = true'"
                                 + (f"; unknown key(s) {', '.join(sorted(unknown))}" if unknown else ""))
            try:
                _compiled(rule["pattern"])
            except regex.error as e:
                raise ValueError(f"rules[{i}]: pattern {rule['pattern']!r} does not compile ({e})") from None

    def apply(self, doc: Doc, stats: StageStats) -> Doc | None:
        text = doc["text"]
        for rule in self.rules:
            pattern = _compiled(rule["pattern"])
            if rule.get("drop"):
                m = pattern.search(text)
                if m:
                    stats.drop(doc, f"matches {rule['pattern']}", m.group(0)[:80])
                    return None
            else:
                text, n = pattern.subn(rule["replace"], text)
                if n:
                    stats.counters[f"replaced {rule['pattern']}"] += n
        if not text.strip():
            stats.drop(doc, "empty after replacements")
            return None
        return doc if text == doc["text"] else {**doc, "text": text}
