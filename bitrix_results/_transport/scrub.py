"""The one secret scrubber: keeps webhook codes, tokens and client secrets out of errors.

Both the REST calls and the token refresh fail through the same path
(``aiohttp_sender.py``), and this is the only place that cleans what they raise.
"""

from __future__ import annotations

import re
from urllib.parse import quote, quote_plus, unquote, unquote_plus

__all__ = ["scrub_text", "scrubbed"]

# A secret query parameter, up to the next parameter or quote: caught by name
# whatever its encoding (yarl keeps "/" but encodes "+").
_SECRET_PARAM = re.compile(r"""((?:client_secret|refresh_token|access_token|auth)=)[^&\s'"]*""")


def _forms(secrets: tuple[str, ...]) -> list[str]:
    """Every form the secrets take in a URL, longest first (so no form is half-replaced)."""
    return sorted({form for secret in secrets for form in _encoded(secret)}, key=len, reverse=True)


def _encoded(secret: str) -> tuple[str, ...]:
    """The forms ``secret`` takes in a URL: as is, and as the common encoders write it."""
    return (secret, quote(secret), quote(secret, safe=""), quote_plus(secret))


def scrub_text(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` with every secret, as is or percent-encoded, replaced by ``***``."""
    text = _SECRET_PARAM.sub(r"\1***", text)
    for form in _forms(secrets):
        text = text.replace(form, "***")
    return text


def scrubbed(exc: BaseException, secrets: tuple[str, ...]) -> BaseException | None:
    """``exc`` with every secret in its chain's args replaced by ``***``, or None if still leaky.

    A secret may appear as is or percent-encoded (it travelled in a URL). Some
    exceptions build their text from attributes rather than args (an aiohttp
    ``ClientResponseError`` shows its request URL): when any text of the chain
    still shows a secret after scrubbing, the caller must chain to nothing.
    """
    forms = _forms(secrets)

    def scrub(value: object) -> object:
        if isinstance(value, str):
            value = _SECRET_PARAM.sub(r"\1***", value)
            for form in forms:
                value = value.replace(form, "***")
        return value

    chain = _chain(exc)
    for link in chain:
        link.args = tuple(scrub(arg) for arg in link.args)
    for link in chain:
        try:
            texts = (str(link), repr(link))
        except Exception:  # a broken __str__: do not chain to it at all
            return None
        # Decoded too: a secret in an encoding not scrubbed above still shows.
        decoded = [form for text in texts for form in (text, unquote(text), unquote_plus(text))]
        if any(secret in text for text in decoded for secret in secrets):
            return None
    return exc


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and every error it chains to: what a traceback of it prints."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain
