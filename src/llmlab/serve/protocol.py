"""OpenAI's request bodies and error shape: what /v1/chat/completions and /v1/completions accept.

Requests are pydantic models in strict mode parsed straight from the JSON bytes,
so a wrong type ("temperature": "hot", "n": 1.5) is an error rather than a
silent coercion, and so is NaN or infinity. The bounds follow OpenAI's API
reference: temperature in [0, 2], top_p in (0, 1], at most 4 stop strings,
top_logprobs up to 20 (chat) and logprobs up to 5 (completions). Unknown
fields are ignored, as OpenAI-compatible servers do, except sampling knobs this
server cannot honour, which are refused rather than silently dropped. One
extension, as vLLM has it: `ignore_eos` (generate max_tokens whatever the model
says; load tests want fixed output lengths).

Every error answers with OpenAI's body (the `openai` client raises
`BadRequestError` etc. from it):

    {"error": {"message": "...", "type": "invalid_request_error", "param": "temperature", "code": null}}

Which limits depend on the model (context window, the `n` cap) is checked by the app.
"""

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

MAX_STOP = 4
MAX_TOP_LOGPROBS = 20  # chat: OpenAI's limit
MAX_COMPLETION_LOGPROBS = 5  # legacy completions: OpenAI's limit
# Accepted and mapped: OpenAI's newer models call the system prompt's role "developer".
ROLE_ALIASES = {"developer": "system"}


class APIError(Exception):
    """An error answered with OpenAI's error body and an HTTP status."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type: str = "invalid_request_error", headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="ignore")


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class Message(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    def as_dict(self) -> dict[str, str]:
        """{"role", "content"} as the chat template wants it: text parts joined, developer -> system."""
        text = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content or [])
        return {"role": ROLE_ALIASES.get(self.role, self.role), "content": text}


class StreamOptions(_Strict):
    include_usage: bool = False


class _Sampling(_Strict):
    """Fields both endpoints share."""

    model: str | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    n: Annotated[int, Field(ge=1)] = 1
    stop: str | Annotated[list[str], Field(max_length=MAX_STOP)] | None = None
    seed: Annotated[int, Field(ge=0, lt=2 ** 63)] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    user: str | None = None
    ignore_eos: bool = False  # vLLM's extension: generate max_tokens whatever the model says (benchmarks)

    @field_validator("presence_penalty", "frequency_penalty")
    @classmethod
    def _zero_only(cls, value: float) -> float:
        if value != 0:
            raise ValueError("not supported by this server; leave it at 0")
        return value

    @field_validator("stream_options")
    @classmethod
    def _only_streaming(cls, value, info: ValidationInfo):
        if value is not None and not info.data.get("stream"):
            raise ValueError("only allowed when stream is true")
        return value

    def stop_strings(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return [s for s in stops if s]


class ChatRequest(_Sampling):
    messages: Annotated[list[Message], Field(min_length=1)]
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    logprobs: bool = False
    top_logprobs: Annotated[int, Field(ge=0, le=MAX_TOP_LOGPROBS)] | None = None

    @field_validator("top_logprobs")
    @classmethod
    def _needs_logprobs(cls, value, info: ValidationInfo):
        if value is not None and not info.data.get("logprobs"):
            raise ValueError("needs logprobs set to true")
        return value

    def new_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def engine_logprobs(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None


class CompletionRequest(_Sampling):
    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: Annotated[int, Field(ge=0, le=MAX_COMPLETION_LOGPROBS)] | None = None
    echo: bool = False
    suffix: str | None = None

    @field_validator("prompt")
    @classmethod
    def _not_empty(cls, value):
        if isinstance(value, list) and (not value or any(isinstance(p, list) and not p for p in value)):
            raise ValueError("empty; give a string, token ids, or a list of either")
        return value

    @field_validator("echo", "suffix")
    @classmethod
    def _unsupported(cls, value):
        if value:
            raise ValueError("not supported by this server")
        return value

    def prompts(self) -> list[str | list[int]]:
        """The prompts as a list, each a string or token ids: "hi" -> ["hi"]; [1, 2] -> [[1, 2]]."""
        if isinstance(self.prompt, str):
            return [self.prompt]
        if isinstance(self.prompt[0], int):
            return [list(self.prompt)]
        return list(self.prompt)

    def new_tokens(self) -> int | None:
        return self.max_tokens

    def engine_logprobs(self) -> int | None:
        return self.logprobs


def parse(model: type[_Sampling], body: bytes) -> _Sampling:
    """A request model from the raw body; any problem becomes a 400 `APIError` naming the field."""
    try:
        return model.model_validate_json(body)
    except ValidationError as e:
        raise _as_api_error(e) from None


def _as_api_error(e: ValidationError) -> APIError:
    """The first validation error as OpenAI would word it: the field path, then what is wrong.

    A union field (stop: a string or a list) fails once per branch; the error that is not a type
    mismatch ("too long" rather than "not a string") is the one that explains it.
    """
    errors = e.errors(include_url=False)
    err = errors[0]
    same_field = [x for x in errors if x["loc"][:1] == err["loc"][:1] and not x["type"].endswith("_type")]
    err = same_field[0] if same_field else err
    if err["type"] == "json_invalid":
        return APIError(400, f"the request body is not valid JSON ({err['msg']})", code="invalid_json")
    loc = [str(p) for p in err["loc"] if not str(p).startswith(("function-after", "constrained-"))]
    loc = [p for p in loc if p not in ("str", "list[str]", "list[int]", "list[list[int]]", "list[TextPart]",
                                       "TextPart", "int", "float", "bool", "none")]
    param = ".".join(loc) or None
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "missing":
        msg = "this field is required"
    return APIError(400, f"{param}: {msg}" if param else msg, param=param,
                    code="invalid_value" if err["type"] != "missing" else "missing_required_parameter")
