"""The JSON API: every dashboard action, for programs (Authorization: Bearer <token>).

One module per resource, each declaring its routes on the one blueprint (web.api.blueprint), with
the request and response models of web.schemas that /api/openapi.json describes. Importing this
package registers every route."""

from __future__ import annotations

from web.api import (  # noqa: F401
    cross_validations,
    data_folders,
    health,
    jobs,
    sweeps,
    users,
    webhooks,
)
from web.api.blueprint import bp  # noqa: F401
