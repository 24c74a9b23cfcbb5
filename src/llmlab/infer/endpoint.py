"""HTTP to a hosted model: JSON requests, server-sent event streams, timeouts, retries, one-line errors.

The transport under `llmlab.infer.clients`' OpenAI and Anthropic backends,
written with the standard library only (urllib), so talking to an API needs no
extra package. It knows URLs, headers and status codes, never what a chat is.

- Every request has a timeout (`timeout` seconds per socket read, so a stream
  that stalls for that long ends too).
- 408, 409, 429 and every 5xx (Anthropic's 529 "overloaded" included), a
  timeout or a dropped connection are tried again, up to `max_retries` more
  times, waiting the server's Retry-After (seconds, milliseconds or an HTTP
  date) or else `backoff * 2**attempt` seconds, never more than 60.
  A stream is retried only until its first byte: text already handed to the
  caller cannot be taken back.
- Anything else a user can fix (a rejected key, a wrong URL, an answer that is
  not JSON) is one `UserError` line naming the setting to change.

`sse_events` parses a stream as the HTML standard's "server-sent events"
section says (both OpenAI and Anthropic stream this way).
"""

import http.client
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from email.utils import parsedate_to_datetime

from llmlab.common.errors import UserError

MAX_WAIT_S = 60.0  # a Retry-After of minutes means "come back later", not "block this run": cap it


def retryable_status(status: int) -> bool:
    """Timeouts (408), conflicts (409), rate limits (429) and server errors (5xx, 529 overloaded)."""
    return status in (408, 409, 429) or status >= 500


def error_message(raw: bytes) -> str:
    """The `error.message` of an OpenAI- or Anthropic-style error body, else its first 200 characters.

    b'{"error": {"message": "bad key"}}' -> "bad key";
    b'{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}' -> "Overloaded".
    """
    text = raw.decode("utf-8", errors="replace")
    try:
        error = json.loads(text).get("error")
        return str(error.get("message", error) if isinstance(error, dict) else error or text[:200])
    except (json.JSONDecodeError, AttributeError):
        return text[:200]


def retry_after_seconds(headers) -> float | None:
    """Seconds to wait from `retry-after-ms` (OpenAI) or `Retry-After` (seconds or an HTTP date); None if absent.

    {"Retry-After": "2"} -> 2.0; {"retry-after-ms": "250"} -> 0.25; a date 3 s ahead -> about 3.0.
    """
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def sse_events(lines: Iterable[str]) -> Iterator[tuple[str, str]]:
    """(event type, data) per server-sent event; the type is "message" when the event names none.

    ["event: ping", "data: {}", "", ": comment", "data: a", "data: b", ""] -> ("ping", "{}"), ("message", "a\\nb").
    """
    event, data = "", []
    for line in lines:
        line = line.rstrip("\r\n")
        if not line:
            if data:
                yield event or "message", "\n".join(data)
            event, data = "", []
            continue
        if line.startswith(":"):  # a comment, often sent to keep the connection open
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            event = value
        elif field == "data":
            data.append(value)
    if data:
        yield event or "message", "\n".join(data)


class _Retryable(Exception):
    """A failure worth another try: a timeout, rate limit or server error."""

    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.reason, self.retry_after = reason, retry_after


class Endpoint:
    """POSTs JSON to one API. `key_env` and `url_env` name the settings an error message tells the user to fix.

    `sleep` is injectable so tests can record the waits instead of sleeping.
    """

    def __init__(self, headers: dict[str, str], *, timeout: float = 60.0, max_retries: int = 3, backoff: float = 1.0,
                 sleep: Callable[[float], None] = time.sleep, key_env: str = "api_key",
                 url_env: str = "base_url"):
        if timeout <= 0 or max_retries < 0 or backoff < 0:
            raise ValueError(f"need timeout > 0, max_retries >= 0, backoff >= 0; got {timeout}, {max_retries}, "
                             f"{backoff}")
        self.headers = {"Content-Type": "application/json", **headers}
        self.timeout, self.max_retries, self.backoff, self.sleep = timeout, max_retries, backoff, sleep
        self.key_env, self.url_env = key_env, url_env

    def post(self, url: str, body: dict) -> dict:
        """The decoded JSON answer to `body`, retrying what is worth retrying."""
        raw = self._retrying(url, lambda: self._read_once(url, body))
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise UserError(f"{url}: the answer is not JSON ({raw[:80]!r}); is {self.url_env} the API's base URL "
                            f"(OpenAI-compatible ones usually end in /v1)?") from None

    def stream(self, url: str, body: dict) -> Iterator[tuple[str, str]]:
        """The server-sent events answering `body`: (event type, data) as they arrive."""
        with self._retrying(url, lambda: self._open_once(url, body)) as response:
            kind = response.headers.get("Content-Type", "")
            if not kind.startswith("text/event-stream"):
                raw = response.read(200)
                raise UserError(f"{url}: asked for a stream but got {kind or 'no content type'} "
                                f"({raw[:80]!r}); does this server stream?")
            lines = (line.decode("utf-8", errors="replace") for line in response)
            try:
                yield from sse_events(lines)
            except (TimeoutError, ConnectionError, http.client.HTTPException) as e:
                raise UserError(f"{url}: the stream broke off ({type(e).__name__}: no data within "
                                f"{self.timeout:g} s or the connection dropped); try again") from None

    def _retrying(self, url: str, attempt_once: Callable[[], object]):
        """`attempt_once()`, tried again after each `_Retryable` failure until `max_retries` are spent."""
        attempt = 0
        while True:
            try:
                return attempt_once()
            except _Retryable as e:
                if attempt == self.max_retries:
                    raise UserError(f"{url}: {e.reason} after {attempt + 1} attempt(s); try again later or "
                                    f"raise timeout / max_retries") from None
                wait = e.retry_after if e.retry_after is not None else self.backoff * 2 ** attempt
                self.sleep(min(MAX_WAIT_S, wait))
                attempt += 1

    def _read_once(self, url: str, body: dict) -> bytes:
        with self._open_once(url, body) as response:
            try:
                return response.read()
            except TimeoutError:
                raise _Retryable(f"no answer within {self.timeout:g} s") from None
            except (ConnectionError, http.client.HTTPException) as e:
                raise _Retryable(f"the connection dropped ({type(e).__name__})") from None

    def _open_once(self, url: str, body: dict):
        """An open HTTP response to POSTing `body`; HTTP error statuses become exceptions here."""
        request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=self.headers, method="POST")
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as e:
            raise self._http_error(url, e) from None
        except TimeoutError:
            raise _Retryable(f"no answer within {self.timeout:g} s") from None
        except (ConnectionError, http.client.HTTPException) as e:
            raise _Retryable(f"the connection dropped ({type(e).__name__})") from None
        except urllib.error.URLError as e:
            if isinstance(e.reason, TimeoutError):
                raise _Retryable(f"no answer within {self.timeout:g} s") from None
            raise UserError(f"{url}: cannot reach the endpoint ({e.reason}); check base_url or "
                            f"{self.url_env}") from None

    def _http_error(self, url: str, e: urllib.error.HTTPError) -> Exception:
        """`_Retryable` for 408/409/429/5xx, else a one-line `UserError` saying what to fix."""
        detail = error_message(e.read())
        if retryable_status(e.code):
            return _Retryable(f"HTTP {e.code} {detail}".strip(), retry_after_seconds(e.headers))
        if e.code in (401, 403):
            return UserError(f"{url}: the API key was rejected (HTTP {e.code}: {detail}); set api_key or "
                             f"{self.key_env}")
        if e.code == 404:
            return UserError(f"{url}: not found (HTTP 404: {detail}); check base_url (usually ending in /v1) and "
                             f"the model name")
        return UserError(f"{url}: the request was refused (HTTP {e.code}: {detail})")
