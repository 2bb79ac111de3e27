"""Role checks live in core.service, not only in the web: the service's restricted reads (users, the audit log,
webhooks and their deliveries) and the data-folder registration refuse a member or viewer when called
directly, before they look anything up; the CLI's actor (an admin) is served."""

from __future__ import annotations

import pytest

from core.common.errors import NotFound
from core.service import audit, data_folders, users, webhooks
from core.service.access import Actor, PermissionDenied, cli_actor
from core.service.db import get_sessionmaker, upgrade_database
from core.service.settings import get_settings

MEMBER = Actor(2, "bob", "member")
VIEWER = Actor(3, "vic", "viewer")


@pytest.fixture
def database(isolated_home, settings_override, tmp_path):
    (tmp_path / "data").mkdir()
    settings_override(DATA_ROOTS=str(tmp_path / "data"))
    upgrade_database()
    with get_sessionmaker().begin() as session:
        users.add_user(session, cli_actor(), "alice", "admin", "wonderland-42")
        users.add_user(session, cli_actor(), "bob", "member", "wonderland-42")
    return tmp_path / "data"


ADMIN_READS = {
    "users.list_users": (lambda s, a: users.list_users(s, a), "only admins may manage users"),
    "users.find_user": (lambda s, a: users.find_user(s, 999, a), "only admins may manage users"),
    "audit.entries": (lambda s, a: audit.entries(s, a), "only admins may read the audit log"),
    "webhooks.list_webhooks": (lambda s, a: webhooks.list_webhooks(s, a), "only admins may manage webhooks"),
    "webhooks.delivery_counts": (lambda s, a: webhooks.delivery_counts(s, a), "only admins may manage webhooks"),
    "webhooks.deliveries": (lambda s, a: webhooks.deliveries(s, a, 999), "only admins may manage webhooks"),
}


@pytest.mark.parametrize("read", list(ADMIN_READS))
def test_a_restricted_service_read_refuses_a_member_before_looking(database, read):
    call, refusal = ADMIN_READS[read]
    for actor in (MEMBER, VIEWER):
        with get_sessionmaker().begin() as session, pytest.raises(PermissionDenied) as refused:
            call(session, actor)
        assert str(refused.value) == f"{actor.username} is a {actor.role}: {refusal}"  # not NotFound for id 999
    with get_sessionmaker().begin() as session:
        try:
            call(session, cli_actor())
        except NotFound:  # id 999 names nothing: the admin got past the check to the lookup
            pass


def test_users_and_audit_reads_answer_an_admin(database):
    with get_sessionmaker().begin() as session:
        assert [u.username for u in users.list_users(session, cli_actor())] == ["alice", "bob"]
        entries, total = audit.entries(session, Actor(1, "alice", "admin"))
        assert total == 2 and [e.action for e in entries] == ["user.add", "user.add"]


def test_registering_a_data_folder_refuses_a_viewer_in_the_service(database):
    (database / "cells").mkdir()
    roots = get_settings().data_root_paths
    with get_sessionmaker().begin() as session, pytest.raises(PermissionDenied, match="^vic is a viewer: only members"):
        data_folders.register_data_folder(session, "cells", str(database / "cells"), actor=VIEWER, roots=roots)
    with get_sessionmaker().begin() as session:
        folder = data_folders.register_data_folder(session, "cells", str(database / "cells"), actor=MEMBER, roots=roots)
        assert folder.name == "cells" and data_folders.list_data_folders(session) == [folder]


def test_every_kind_of_submit_refuses_a_viewer_before_looking(database):
    """core.service.submissions.submit checks the role once for every door and every kind of request, before it
    reads the request: a viewer is refused (not told the architecture is unknown or the cross-validation
    missing); a member gets past the check to the request's own errors; nothing is written either way."""
    from core.common.errors import UserInputError
    from core.service import submissions
    from core.service.jobs import CrossValidationRequest, EnsembleRequest, JobRequest, Origin, SweepRequest
    from core.service.records import AuditEntry, Job

    missing = str(database / "absent")
    requests = [
        JobRequest(kind="train", params={"data_dir": missing, "arch": "resnet34"}),
        SweepRequest(kind="train", base_params={"data_dir": missing}, grid={"arch": ["resnet18", "resnet34"]}),
        CrossValidationRequest(params={"data_dir": missing}),
        EnsembleRequest(cv_id=999, split="valid.csv"),
    ]
    for request in requests:
        for origin in Origin:
            with get_sessionmaker().begin() as session, pytest.raises(PermissionDenied) as refused:
                submissions.submit(session, request, VIEWER, origin, get_settings())
            assert str(refused.value) == "vic is a viewer: only members and admins may submit or change jobs"
        with get_sessionmaker().begin() as session, pytest.raises(UserInputError):  # NotFound for the ensemble
            submissions.submit(session, request, MEMBER, Origin.API, get_settings())
    with get_sessionmaker().begin() as session:
        assert session.query(Job).count() == 0
        assert [entry.action for entry in session.query(AuditEntry)] == ["user.add", "user.add"]


def test_the_api_bodies_are_the_service_requests():
    """The API's submit bodies are the service's request models (their fields written once); the ensemble's body
    leaves out the cv_id its path carries."""
    from core.service.jobs import request
    from web.api import schemas

    for body, model in (
        (schemas.JobSubmission, request.JobRequest),
        (schemas.SweepSubmission, request.SweepRequest),
        (schemas.CrossValidationSubmission, request.CrossValidationRequest),
        (schemas.EnsembleSubmission, request.EnsembleChoice),
    ):
        assert issubclass(body, model) and list(body.model_fields) == list(model.model_fields), body
    assert set(request.EnsembleRequest.model_fields) == set(schemas.EnsembleSubmission.model_fields) | {"cv_id"}
