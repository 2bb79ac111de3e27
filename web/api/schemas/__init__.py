"""The JSON API's request and response models: defined once, they validate what comes in, serialise
what goes out, and are what /api/openapi.json describes (web.openapi generates it from them).

Responses read ORM rows through `from_attributes`, so a job's fields are named here and in
core.service.records only; job parameters are the core.engine.params models and an epoch is core.engine.progress.EpochRecord,
the one shape training reports, the worker stores and the API answers. The submit bodies are
core.service.jobs.request's models; the job and sweep answers carry JobOptions' fields."""

from __future__ import annotations

from web.api.schemas.common import (  # noqa: F401
    Deletion,
    DiskUse,
    ErrorBody,
    Health,
    Id,
    JsonRequest,
    Name,
    OpenApiDocument,
    OptionsEdit,
    PageQuery,
    QueueName,
    Row,
    TagFilter,
    UtcTime,
)
from web.api.schemas.data_folders import (  # noqa: F401
    DataFolder,
    DataFolderList,
    DataFolderRegistration,
)
from web.api.schemas.jobs import (  # noqa: F401
    NOT_IN_WEB_GRIDS,
    WEB_PARAMS,
    Artifact,
    Evaluation,
    Job,
    JobArtifacts,
    JobImages,
    JobKind,
    JobListQuery,
    JobMetrics,
    JobPage,
    JobResults,
    JobSubmission,
    ParamsObject,
    StatusName,
)
from web.api.schemas.sweeps import (  # noqa: F401
    CrossValidation,
    CrossValidationEnsemble,
    CrossValidationFold,
    CrossValidationSubmission,
    EnsembleSubmission,
    FoldMetrics,
    GridValue,
    MeanStd,
    Sweep,
    SweepListQuery,
    SweepPage,
    SweepSubmission,
)
from web.api.schemas.users import (  # noqa: F401
    AuditEntry,
    AuditPage,
    Me,
    PasswordReset,
    Role,
    TokenCreate,
    TokenCreated,
    TokenInfo,
    TokenList,
    UserCreate,
    UserCreated,
    UserInfo,
    UserList,
    UserUpdate,
)
from web.api.schemas.webhooks import (  # noqa: F401
    WEBHOOK_SECRET,
    WEBHOOK_URL,
    Webhook,
    WebhookChange,
    WebhookCreated,
    WebhookCreation,
    WebhookDelivery,
    WebhookDeliveryPage,
    WebhookEvent,
    WebhookList,
)
