"""Webhooks: admin-configured URLs that receive signed JSON when a job ends or a worker is lost.

An event is an outbox row per subscribed webhook (webhook_deliveries), written in the transaction
of the status change that makes it: a rolled-back change announces nothing, a committed one is
never forgotten. A sender (`deliver_due`: a thread of every worker, or `leukemia webhooks deliver`)
takes one due delivery at a time with one conditional UPDATE (a lease longer than an attempt can
last), so two senders never send one delivery, POSTs the stored body signed with the webhook's
secret (transport: checked addresses, a total deadline), and retries with doubling back-off. A
disabled webhook's deliveries wait until it is enabled again. Delivery runs beside the jobs, never
inside them: a slow or failing receiver holds up no job.

config: the webhooks and their reads; outbox: events as delivery rows; sender: claim, POST,
record; transport: the HTTP side (address policy, deadline, redaction). The package re-exports
what callers use; helpers and constants (the lease margin, the back-off cap) stay in the module
that reads them, which is where a test patches them. docs/web.md, "Webhooks"."""

from __future__ import annotations

from core.service.webhooks.config import (  # noqa: F401
    add,
    change,
    deliveries,
    delivery_counts,
    get_webhook,
    list_webhooks,
    remove,
)
from core.service.webhooks.outbox import (  # noqa: F401
    job_ended,
    lost_workers,
    report_lost_workers,
    report_replaced_worker,
    send_again,
    send_test,
)
from core.service.webhooks.sender import claim_next, deliver_due, record_attempt, signature  # noqa: F401
from core.service.webhooks.transport import redact_url  # noqa: F401
