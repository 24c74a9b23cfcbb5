"""PII redaction: e-mail addresses, IP addresses and phone numbers replaced by placeholders, and counted.

Regular expressions in the style of BigScience's and datatrove's PII formatters: an e-mail is
`local@domain.tld`; an IP address is whatever `ipaddress` accepts among dotted quads and colon-hex
candidates (so `999.1.1.1` and version strings like `3.11.2` stay); a phone number has an area code in
parentheses or followed by a separator, then two groups of 3-4 digits (`(555) 123-4567`, `+44 20 7946 0958`,
`555.123.4567`), and is not part of a longer run of digits, dots or hyphens (dates, ISBNs, IPs, ZIP+4).
IPs are replaced first so a dotted quad is never read as a phone number.

Regexes miss things (names, street addresses, IDs) and catch a few look-alikes; the report counts what
was replaced, never the values themselves (reports must not re-publish the PII they removed).
"""

import dataclasses
import ipaddress

import regex

from llmlab.data.pipeline.stage import Doc, DocStage, StageStats

EMAIL = regex.compile(r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}(?![\w-])")
IPV4 = regex.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d)")
IPV6 = regex.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
PHONE = regex.compile(r"""
    (?<![\w.+-])
    (?:\+\d{1,3}[ .-]?)?               # country code
    (?:\(\d{2,4}\)[ ]?|\d{2,4}[ .-])   # area code: in parentheses, or followed by a separator
    \d{3,4}[ .-]?\d{3,4}
    (?![\w-]|\.\d)""", regex.VERBOSE)


def _valid_ip(candidate: str, private: bool) -> bool:
    if ":" in candidate and sum(1 for group in candidate.split(":") if group) < 3:
        return False  # '::2' is a valid address, and a Python slice: ask for three groups
    try:
        ip = ipaddress.ip_address(candidate)
    except ValueError:
        return False
    return private or ip.is_global


def redact(text: str, email: str | None = "<EMAIL>", ip: str | None = "<IP_ADDRESS>",
           phone: str | None = "<PHONE>", private_ips: bool = True) -> tuple[str, dict[str, int]]:
    """Replace each kind of PII given a placeholder; return the text and counts per kind.

    >>> redact("mail ada@example.org or call (555) 123-4567 from 8.8.8.8")
    ('mail <EMAIL> or call <PHONE> from <IP_ADDRESS>', {'ip addresses': 1, 'emails': 1, 'phone numbers': 1})
    """
    counts = {"ip addresses": 0, "emails": 0, "phone numbers": 0}

    def sub_ip(m: regex.Match) -> str:
        if _valid_ip(m.group(0), private_ips):
            counts["ip addresses"] += 1
            return ip or ""
        return m.group(0)

    if ip is not None:
        text = IPV6.sub(sub_ip, IPV4.sub(sub_ip, text))
    if email is not None:
        text, counts["emails"] = EMAIL.subn(email, text)
    if phone is not None:
        text, counts["phone numbers"] = PHONE.subn(phone, text)
    return text, counts


@dataclasses.dataclass
class PII(DocStage):
    name = "pii"
    email: str | None = "<EMAIL>"
    ip: str | None = "<IP_ADDRESS>"
    phone: str | None = "<PHONE>"
    private_ips: bool = True  # datatrove redacts public addresses only; 10.0.0.1 in a log can still be someone's

    def apply(self, doc: Doc, stats: StageStats) -> Doc | None:
        text, counts = redact(doc["text"], self.email, self.ip, self.phone, self.private_ips)
        if text == doc["text"]:
            return doc
        stats.counters.update({k: v for k, v in counts.items() if v})
        stats.counters["documents with PII"] += 1
        placeholders = [p for p in (self.email, self.ip, self.phone) if p and p in text]
        at = min((text.index(p) for p in placeholders), default=0)
        stats.example("redacted", {"id": doc["id"], "text": text[max(at - 60, 0):]})  # around the first one
        return {**doc, "text": text}
