"""Registry credentials as a request carries them (Docker's X-Registry-Auth) and as Docker's
config file holds them. Plain data; never logged, never stored by berth."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RegistryCredentials:
    """What to authenticate with; every field "" when absent."""

    username: str = ""
    password: str = field(default="", repr=False)
    # An OAuth refresh token (Docker's IdentityToken).
    identity_token: str = field(default="", repr=False)
    # A bearer token used as it is (Docker's RegistryToken).
    registry_token: str = field(default="", repr=False)

    @property
    def anonymous(self) -> bool:
        return not (self.username or self.password or self.identity_token or self.registry_token)


ANONYMOUS = RegistryCredentials()
