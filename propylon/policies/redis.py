"""The Redis login that ``rateLimit`` (global mode) and ``cache`` (store: redis) share:
``username`` (an ACL user; Redis's ``default`` user when omitted) and ``password``, a secret
(``{secretRef: {file|env}}``) read at translation like every secret (``SecretValue``)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, SerializerFunctionWrapHandler, model_serializer, model_validator

from propylon.schema import Model, SecretValue, invalid

_LOGIN_FIELDS = ("username", "password")


class RedisLogin(Model):
    username: str | None = Field(default=None, min_length=1)
    password: SecretValue | None = None

    @model_validator(mode="after")
    def _password_with_username(self) -> RedisLogin:
        if self.username is not None and self.password is None:
            raise invalid("redis_password", "a Redis username needs a password")
        return self

    @model_serializer(mode="wrap")
    def _without_unset_login(self, handler: SerializerFunctionWrapHandler) -> Any:
        """Left out of the JSON form while unset, so the IR of a configuration without them
        (and its version) is what it was, and proxies of the previous release still read it."""
        data = handler(self)
        if isinstance(data, dict):
            for name in _LOGIN_FIELDS:
                if data.get(name, 0) is None:
                    del data[name]
        return data

    def login(self) -> tuple[str | None, str | None, str | None]:
        """(username, password, why the password could not be read)."""
        password = self.password
        if password is None:
            return self.username, None, None
        return self.username, password.value(), password.secret_error
