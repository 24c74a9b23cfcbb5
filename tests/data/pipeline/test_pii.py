"""PII redaction against the PII planted by the corpus generator, and look-alikes that must stay."""

import re

from llmlab.data.pipeline.pii import PII, redact
from llmlab.data.pipeline.stage import StageStats

NOT_PII = ["version 3.11.2", "on 2024-01-15 at 10:30:45", "ISBN 978-3-16-148410-0", "ZIP 12345-6789",
           "1,234,567 people", "x[::2] and a::b", "timestamp 1700000000", "999.1.1.1", "user@localhost"]


def test_planted_pii_is_all_found(noisy_rows):
    rows = [r for r in noisy_rows if r["kind"] == "pii"]
    stats = StageStats("pii")
    for r in rows:
        out = PII().apply({"id": r["id"], "text": r["text"], "source": "s"}, stats)
        # every planted value is gone, and the rest of the sentence is intact
        assert re.search(r"write to <EMAIL> or call <PHONE> during office hours\. The server at <IP_ADDRESS> "
                         r"logged", out["text"]), out["text"]
        assert "@" not in out["text"]
    assert stats.counters["emails"] == stats.counters["phone numbers"] == stats.counters["ip addresses"] == len(rows)
    assert stats.counters["documents with PII"] == len(rows)
    assert all("<EMAIL>" in ex["text"] for ex in stats.examples["redacted"])  # reports show redacted text only


def test_look_alikes_stay():
    for text in NOT_PII:
        assert redact(text) == (text, {"ip addresses": 0, "emails": 0, "phone numbers": 0}), text


def test_formats():
    text = "(555) 123-4567, 555.123.4567, +44 20 7946 0958, +1 555 123 4567, 2001:db8::1, 10.0.0.1, a.b@c.co.uk"
    out, counts = redact(text)
    assert counts == {"ip addresses": 2, "emails": 1, "phone numbers": 4}
    assert redact("10.0.0.1 and 8.8.8.8", private_ips=False)[0] == "10.0.0.1 and <IP_ADDRESS>"
    assert redact("mail a@b.org", email=None)[0] == "mail a@b.org"
