"""Serving: an OpenAI-compatible HTTP server and a web chat page over `llmlab.infer.engine`.

`create_app(llmlab.load(M))` builds the FastAPI app; `llmlab serve` runs it with uvicorn.
"""

from llmlab.serve.app import create_app

__all__ = ["create_app"]
