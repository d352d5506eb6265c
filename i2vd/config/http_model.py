"""The config of what i2vd serves and sends: `http:` (the dashboard, JSON API and metrics) and `webhooks:`."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, PlainValidator, Strict, model_validator
from pydantic.dataclasses import dataclass

from i2vd.config.checks import Float, Folder, Text, Url, _listen, is_loopback, problem, split_listen
from i2vd.config.model_base import SETTINGS, _EmptyIsDefaults


@dataclass(frozen=True, config=SETTINGS)
class HttpConfig(_EmptyIsDefaults):
    """The web dashboard, JSON API and metrics (absent: no HTTP server)."""

    listen: Annotated[str, Strict(), PlainValidator(_listen)] = Field(
        "127.0.0.1:8787", description="host:port; anything but loopback needs a token"
    )
    token_file: Folder | None = Field(
        None,
        description="a file holding the token (surrounding whitespace stripped); every route but /healthz "
        "and /login then needs it (Authorization: Bearer, or the cookie /login sets)",
    )
    token: Text | None = Field(None, description="the token itself, instead of token_file")

    @model_validator(mode="after")
    def _token_rules(self) -> HttpConfig:
        if self.token is not None and self.token_file is not None:
            raise problem("give token or token_file, not both", key="token")
        if self.token is not None and not self.token.strip():
            raise problem("is empty", key="token")
        if self.token is None and self.token_file is None and not is_loopback(split_listen(self.listen)[0]):
            raise problem(
                f"{self.listen} is beyond loopback: set token_file (or token), or listen on 127.0.0.1", key="listen"
            )
        return self


WEBHOOK_EVENTS = ("done", "failed", "parked", "server_down", "server_up")


class WebhookConfig(_EmptyIsDefaults, BaseModel):
    """One receiver of events: POSTed JSON, signed when a secret is set."""

    model_config = SETTINGS

    url: Url = Field(description="where events are POSTed", examples=["https://hooks.example.com/i2vd"])
    events: Annotated[list[Literal["done", "failed", "parked", "server_down", "server_up"]], Strict()] = Field(
        default_factory=lambda: list(WEBHOOK_EVENTS), min_length=1, description="which events go there"
    )
    secret_file: Folder | None = Field(
        None,
        description="a file holding the HMAC secret (surrounding whitespace stripped): header "
        "X-I2VD-Signature: sha256=<hex HMAC-SHA256 of the body>",
    )
    timeout_seconds: Float = Field(10.0, ge=0.1, le=300.0, description="longest one delivery attempt may take")
