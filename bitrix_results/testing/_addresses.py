"""The URLs of a fake portal, shared by the served one and the in-process one."""

from __future__ import annotations

from .portal import FakePortal

__all__ = ["PortalAddresses"]


class PortalAddresses:
    """The URLs a client needs to reach a fake portal at `base_url`.

    A mixin: the class that uses it has ``portal`` and ``base_url``.
    """

    portal: FakePortal

    @property
    def base_url(self) -> str:
        """The portal's origin, no trailing slash."""
        raise NotImplementedError

    @property
    def webhook_url(self) -> str:
        """The webhook of the ordinary user: ``<base_url>/rest/1/<code>/``."""
        config = self.portal.config
        return f"{self.base_url}/rest/{config.webhook_user}/{config.webhook_code}/"

    @property
    def admin_webhook_url(self) -> str:
        """A webhook of an administrator (user 2)."""
        return f"{self.base_url}/rest/2/{self.portal.config.admin_webhook_code}/"

    @property
    def client_endpoint(self) -> str:
        """The OAuth ``client_endpoint``: ``<base_url>/rest/``."""
        return f"{self.base_url}/rest/"

    @property
    def oauth_token_url(self) -> str:
        """The token endpoint (on Bitrix24 it is oauth.bitrix.info; here, the same host)."""
        return f"{self.base_url}/oauth/token/"
