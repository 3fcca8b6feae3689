"""``POST /webhooks/<provider>`` as a thin WSGI layer in front of Flask.

Providers post one event per request (Mailgun, Postmark, SES) at the rate mail goes out, and
Flask's request machinery (context push, session opening, routing, teardown) costs as much as
storing such an event. This layer serves the plain case, a POST with a Content-Length within
the configured limit to a known provider, straight from the WSGI environ with the same
``WebhookService`` as the view; everything else (HEAD probes, unknown providers, bodies without
a length or over the limit) goes on to the Flask blueprint, which answers as before.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import lru_cache
from http import HTTPStatus
from typing import Any

from gatekeeper.webhook_service import WebhookService
from webhooks import InboundRequest

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
PREFIX = "/webhooks/"
# Headers that WSGI keeps outside HTTP_*: adapters read Content-Type (Mandrill's form body).
_PLAIN_HEADERS = {"CONTENT_TYPE": "Content-Type", "CONTENT_LENGTH": "Content-Length"}
_JSON = json.JSONEncoder(separators=(",", ":"))  # built once: json.dumps with options builds one per call


class FastWebhooks:
    def __init__(self, app: WsgiApp, service: WebhookService, max_body: int | None) -> None:
        self.app, self.service, self.max_body = app, service, max_body

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path: str = environ.get("PATH_INFO", "")
        if environ.get("REQUEST_METHOD") != "POST" or not path.startswith(PREFIX):
            return self.app(environ, start_response)
        provider = path[len(PREFIX) :]
        length = _length(environ)
        too_big = length is not None and self.max_body is not None and length > self.max_body
        if provider not in self.service.adapters or length is None or too_big:
            return self.app(environ, start_response)
        inbound = InboundRequest(
            method="POST",
            url=self.service.external_url(path, environ.get("QUERY_STRING", "")),
            headers=EnvironHeaders(environ),
            body=environ["wsgi.input"].read(length) if length else b"",  # the raw bytes, signed
            remote_addr=environ.get("REMOTE_ADDR"),
        )
        status, body = self.service.receive(provider, inbound)
        if status == HTTPStatus.OK and "error" not in body:  # counts: a few answers, each encoded once
            data, size = _counts_answer(tuple(body.items()))
        else:
            data = _JSON.encode(body).encode()
            size = str(len(data))
        start_response(_status_line(status), [("Content-Type", "application/json"), ("Content-Length", size)])
        return [data]


@lru_cache(maxsize=1024)
def _counts_answer(counts: tuple[tuple[str, int], ...]) -> tuple[bytes, str]:
    data = _JSON.encode(dict(counts)).encode()
    return data, str(len(data))


@lru_cache(maxsize=64)
def _status_line(status: int) -> str:
    return f"{status} {HTTPStatus(status).phrase}"


def _length(environ: dict[str, Any]) -> int | None:
    raw = environ.get("CONTENT_LENGTH")
    if not raw:
        return None
    try:
        length = int(raw)
    except ValueError:
        return None
    return length if length >= 0 else None


class EnvironHeaders(Mapping[str, str]):
    """The request headers, read from the WSGI environ only when an adapter asks (Mailgun never
    does), by any case of their name."""

    __slots__ = ("environ",)

    def __init__(self, environ: dict[str, Any]) -> None:
        self.environ = environ

    def __getitem__(self, name: str) -> str:
        key = name.upper().replace("-", "_")
        value = self.environ.get(key if key in _PLAIN_HEADERS else "HTTP_" + key)
        if value is None:
            raise KeyError(name)
        return str(value)

    def __iter__(self) -> Iterator[str]:
        for key in self.environ:
            if key.startswith("HTTP_"):
                yield key[5:].replace("_", "-").title()  # as werkzeug spells them
            elif key in _PLAIN_HEADERS and self.environ[key]:
                yield _PLAIN_HEADERS[key]

    def __len__(self) -> int:
        return sum(1 for _ in self)
