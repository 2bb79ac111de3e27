"""Every route of the JSON API, registered on the one blueprint: importing this module declares them
all (web.create_app registers `bp`). Kept apart from the package's __init__ so that importing the
models (web.api.schemas) registers no route and imports no view."""

from __future__ import annotations

from web.api import cross_validations, data_folders, health, jobs, sweeps, users, webhooks  # noqa: F401
from web.api.blueprint import bp  # noqa: F401
