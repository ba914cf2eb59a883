"""The Consumer model: an API client, its credentials (by secret reference) and labels."""

from __future__ import annotations

from pydantic import Field

from propylon.schema import Labels, Model, SecretRef

__all__ = ["ApiKeyCredential", "BasicAuthCredential", "ConsumerSpec", "Credentials", "SecretRef"]


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
