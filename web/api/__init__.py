"""The JSON API: every dashboard action, for programs (Authorization: Bearer <token>).

One module per resource, each declaring its routes on the one blueprint (web.api.blueprint), with
its request and response models beside it in web.api.schemas, which /api/openapi.json describes.
web.api.routes imports them all."""
