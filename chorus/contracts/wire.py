"""The base of every payload model, and the claim-check reference to large text.

Pure (the workflow sandbox passes this module through); :mod:`chorus.contracts.models` and
:mod:`chorus.contracts.tools` build on it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class WireModel(BaseModel):
    """Base of every payload model: unknown fields are ignored, never an error.

    Payloads cross versions during a rolling upgrade (a worker one version older than the
    client, a history written by the next version), so a field added later must not break the
    code of today: ``extra="ignore"``. Files a person writes (agent catalogs, plan files,
    price files) are validated strictly with ``model_validate(..., extra="forbid")`` (which
    applies to nested models too), so a misspelt key there is still an error
    (:data:`FILE_STRICTNESS`).
    """

    model_config = ConfigDict(extra="ignore")


FILE_STRICTNESS: Literal["forbid"] = "forbid"
"""``extra=`` for validating what a person wrote in a file: unknown keys are errors."""


class TextRef(WireModel):
    """Large text stored in PostgreSQL (claim check); workflows carry this, not the text.

    Attributes:
        blob_id: Id of the ``blobs`` row (UUID).
        size_bytes: UTF-8 size of the text.
        sha256: Hex SHA-256 of the UTF-8 text (the store is content-addressed).
        preview: The first 200 characters, for people reading the history.
        chars: Length in characters (references made before it was recorded have ``None``).
    """

    blob_id: str
    size_bytes: int = Field(ge=0)
    sha256: str
    preview: str = ""
    chars: int | None = Field(None, ge=0)


class EntryInput(WireModel):
    """A payload that arrives from outside Chorus's own code.

    A workflow's input, an update's or a signal's argument: anyone with Temporal access can
    send one (the plain ``temporal`` CLI skips the SDK's checks), so when it cannot be decoded
    the data converter raises a non-retryable ``InvalidInput`` naming the field
    (:mod:`chorus.runtime.converter`) instead of failing the workflow task over and over.
    """
