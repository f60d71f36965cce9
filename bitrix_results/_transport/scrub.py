"""The one secret scrubber: keeps webhook codes, tokens and client secrets out of errors.

Two kinds of text reach a library error, and both pass through here:

- what an HTTP client raised (its message often quotes the request URL, which
  holds a webhook code, or a token in the query): the sender chains our error to
  a :func:`scrubbed_copy`, never to the client's own exception object, whose
  attributes (a request URL, headers) no scrubbing of ``args`` can reach;
- what the server sent back (an error message quoting the request path, a token
  endpoint echoing its query): :func:`scrub_text` before it is stored on an error.
"""

from __future__ import annotations

import re
from urllib.parse import quote, quote_plus, unquote, unquote_plus

__all__ = ["ScrubbedError", "scrub_text", "scrubbed_copy", "secret_forms", "shows_secret"]

# A secret query parameter, up to the next parameter or quote: caught by name
# whatever its encoding (yarl keeps "/" but encodes "+"), even when the secret
# itself is not known (a server echoing someone's query).
_SECRET_PARAM = re.compile(
    r"""((?:client_secret|refresh_token|access_token|auth)(?:=|%3D|":\s*"|':\s*'))[^&\s'"]*""",
    re.IGNORECASE,
)
# A link of a chain longer than this is cut: a cycle, or a chain built to be deep.
_MAX_CHAIN = 16


def _forms(secrets: tuple[str, ...]) -> list[str]:
    """Every form the secrets take in a URL, longest first (so no form is half-replaced)."""
    found = {form for secret in secrets if secret for form in _encoded(secret)}
    return sorted(found, key=len, reverse=True)


def _encoded(secret: str) -> tuple[str, ...]:
    """The forms ``secret`` takes in a URL: as is, and as the common encoders write it."""
    return (secret, quote(secret), quote(secret, safe=""), quote_plus(secret))


def secret_forms(secrets: tuple[str, ...]) -> tuple[bytes, ...]:
    """The byte forms of ``secrets`` in a body: URL-encoded, and JSON-escaped (``\\/``)."""
    forms = _forms(secrets)
    escaped = [form.replace("/", "\\/") for form in forms if "/" in form]
    ordered = sorted({*forms, *escaped}, key=len, reverse=True)
    return tuple(form.encode() for form in ordered)


def scrub_text(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` with every secret, as is or percent-encoded, replaced by ``***``.

    Also any value of a ``client_secret``, ``refresh_token``, ``access_token`` or
    ``auth`` parameter, known or not.
    """
    text = _SECRET_PARAM.sub(r"\1***", text)
    for form in _forms(secrets):
        text = text.replace(form, "***")
    return text


def shows_secret(text: str, secrets: tuple[str, ...]) -> bool:
    """Whether ``text`` still shows a secret, in any encoding the scrubber did not catch."""
    decoded = (text, unquote(text), unquote_plus(text))
    return any(secret in form for form in decoded for secret in secrets if secret)


class ScrubbedError(Exception):
    """What the HTTP client raised, as text with every secret replaced by ``***``.

    A library error's ``__cause__`` when the exchange failed. It holds text only
    (``type_name`` and the message), no request object, URL or headers, and no
    traceback frames, so nothing reachable from it holds a secret.
    """

    def __init__(self, type_name: str, message: str) -> None:
        self.type_name = type_name
        super().__init__(f"{type_name}: {message}" if message else type_name)


def scrubbed_copy(exc: BaseException, secrets: tuple[str, ...]) -> ScrubbedError:
    """A text-only copy of ``exc`` and of what it chains to, every secret scrubbed."""
    links: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(links) < _MAX_CHAIN:
        if any(current is seen for seen in links):
            break
        links.append(current)
        # What a traceback of it prints: the explicit cause, else the context.
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )
    copy = ScrubbedError("", "")
    for depth, link in enumerate(reversed(links)):
        kind = type(link)
        name = f"{kind.__module__}.{kind.__qualname__}"
        try:
            message = scrub_text(str(link), secrets)
        except Exception:  # a broken __str__: keep the type name only
            message = ""
        if shows_secret(message, secrets):
            message = "(message withheld: it showed a secret)"
        outer = ScrubbedError(name, message)
        outer.__cause__ = copy if depth else None
        outer.__suppress_context__ = True
        copy = outer
    return copy
