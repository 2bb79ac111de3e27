"""The job service: requests (what a submit asks for), create, claim (lease), heartbeat, record, finish, cancel,
retry, requeue.

Every function takes the session as a keyword and leaves commit to the caller
(`with get_sessionmaker().begin() as session:`). A job row is claimed by one atomic
conditional UPDATE, which is what makes a twice-delivered message run once."""

from __future__ import annotations

from core.service.jobs.artifacts import (  # noqa: F401
    MissingArtifact,
    add_artifact,
    artifact_path,
    checkpoint_location,
    get_artifact,
    job_checkpoint,
    local_checkpoint,
    named_artifact,
    named_artifact_file,
    open_recorded,
    read_recorded,
    record_artifact,
    recorded_file,
    recorded_key,
)
from core.service.jobs.control import (  # noqa: F401
    fail_unsent_job,
    request_cancel,
    retry_job,
)
from core.service.jobs.lease import (  # noqa: F401
    CLAIM_CANDIDATES,
    CLAIM_ORDER,
    LATE_CANCEL,
    PROGRESS_FIELDS,
    claim_job,
    claim_next_job,
    finish_job,
    heartbeat,
    note_attempt,
    queued_jobs,
    record_early_stop,
    record_epoch,
    release_job,
    requeue_lost_jobs,
    running_job_of,
    waiting,
)
from core.service.jobs.queries import (  # noqa: F401
    artifacts,
    child_jobs,
    epoch_metrics,
    find_job,
    find_sweep,
    get_job,
    list_jobs,
    list_sweeps,
    model_jobs,
    options_of,
    options_of_jobs,
    queue_position,
    queue_positions,
    recent_jobs,
    sweep_job_ids,
    sweep_tags,
    tag_filter,
    tags_of,
)
from core.service.jobs.request import (  # noqa: F401
    CrossValidationRequest,
    EnsembleRequest,
    JobRequest,
    Origin,
    SweepRequest,
)
from core.service.jobs.submit import (  # noqa: F401
    DEFAULT_QUEUES,
    NEEDS_CHECKPOINT,
    TRAINING_KINDS,
    apply_options,
    create_job,
    create_sweep,
    parse_grid,
)
from core.service.jobs.workers import (  # noqa: F401
    live_queues,
    live_workers,
    register_worker,
    unregister_worker,
    worker_seen,
)
from core.service.records import MAX_ID  # noqa: F401,E402  (jobs.MAX_ID: the largest id a row can have)
