"""The Consumer model: an API client, its credentials (by secret reference) and labels."""

from __future__ import annotations

from pydantic import Field, model_validator

from propylon.config._types import Labels, Model, exactly_one


class SecretRef(Model):
    """Where a secret lives: a file or an environment variable. Never the secret itself."""

    file: str | None = Field(default=None, min_length=1)
    env: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_source(self) -> SecretRef:
        exactly_one(self, ("file", "env"))
        return self


class ApiKeyCredential(Model):
    secret_ref: SecretRef


class BasicAuthCredential(Model):
    username: str = Field(min_length=1)
    secret_ref: SecretRef


class Credentials(Model):
    api_keys: list[ApiKeyCredential] = Field(default_factory=list)
    basic_auth: list[BasicAuthCredential] = Field(default_factory=list)


class ConsumerSpec(Model):
    credentials: Credentials = Field(default_factory=Credentials)
    labels: Labels = Field(default_factory=dict)
