"""`leukemia webhooks`: add, list, change and remove webhooks, read their delivery history, and
run one delivery pass by hand (workers run it in the background). The CLI acts as an admin."""

from __future__ import annotations

import click

from core.service.access import cli_actor
from core.service.records import WEBHOOK_EVENTS
from leukemia.commands.base import UserCommand, run_db_command


@click.group()
def webhooks() -> None:
    """URLs that receive signed JSON when a job ends or a worker is lost (docs/web.md, "Webhooks")."""


def _session():  # type: ignore[no-untyped-def]
    from core.service.db import get_sessionmaker

    return get_sessionmaker().begin()


@webhooks.command(name="add", cls=UserCommand)
@click.argument("url")
@click.option(
    "--event",
    "events",
    multiple=True,
    type=click.Choice(WEBHOOK_EVENTS),
    help="An event to send (repeat it); default: all of them.",
)
@click.option("--secret", default=None, help="The signing secret (16-128 characters); default: a generated one, shown once.")
def add_command(url: str, events: tuple[str, ...], secret: str | None) -> None:
    """Add a webhook; its signing secret is printed once."""
    from core.service import webhooks as service
    from core.service.settings import get_settings

    def action() -> tuple[int, str, list[str]]:
        with _session() as session:
            hook = service.add(session, cli_actor(), url, list(events or WEBHOOK_EVENTS), secret, settings=get_settings())
            return hook.id, hook.secret, hook.events

    webhook_id, made_secret, subscribed = run_db_command(action)
    click.echo(f"webhook {webhook_id} added for {', '.join(subscribed)}")
    click.echo(f"secret: {made_secret}  (shown once; the receiver verifies X-Leukemia-Signature with it)")


@webhooks.command(name="list", cls=UserCommand)
def list_command() -> None:
    """Webhooks with their events and delivery counts."""
    from core.service import webhooks as service
    from core.service.webhooks import redact_url

    def action() -> list[str]:
        with _session() as session:
            counts = service.delivery_counts(session, cli_actor())
            return [
                f"{hook.id}\t{'enabled' if hook.enabled else 'disabled'}\t{redact_url(hook.url)}\t"
                f"{','.join(hook.events)}\t" + " ".join(f"{k}={v}" for k, v in sorted(counts.get(hook.id, {}).items()))
                for hook in service.list_webhooks(session, cli_actor())
            ]

    lines = run_db_command(action)
    click.echo("\n".join(["id\tstate\turl\tevents\tdeliveries", *lines]) if lines else "no webhooks")


def _set_enabled(webhook_id: int, enabled: bool) -> None:
    from core.service import webhooks as service
    from core.service.settings import get_settings

    def action() -> None:
        with _session() as session:
            service.change(session, cli_actor(), webhook_id, enabled=enabled, settings=get_settings())

    run_db_command(action)
    click.echo(f"webhook {webhook_id} {'enabled' if enabled else 'disabled'}")


@webhooks.command(name="enable", cls=UserCommand)
@click.argument("webhook_id", type=int)
def enable_command(webhook_id: int) -> None:
    """Send events to a webhook again."""
    _set_enabled(webhook_id, True)


@webhooks.command(name="disable", cls=UserCommand)
@click.argument("webhook_id", type=int)
def disable_command(webhook_id: int) -> None:
    """Stop sending to a webhook: no new events, and its pending deliveries wait until it is enabled."""
    _set_enabled(webhook_id, False)


@webhooks.command(name="remove", cls=UserCommand)
@click.argument("webhook_id", type=int)
def remove_command(webhook_id: int) -> None:
    """Remove a webhook and its delivery history."""
    from core.service import webhooks as service

    def action() -> None:
        with _session() as session:
            service.remove(session, cli_actor(), webhook_id)

    run_db_command(action)
    click.echo(f"webhook {webhook_id} removed")


@webhooks.command(name="deliveries", cls=UserCommand)
@click.argument("webhook_id", type=int)
@click.option("--page", type=click.IntRange(1), default=1, show_default=True)
@click.option("--per-page", type=click.IntRange(1, 200), default=50, show_default=True)
def deliveries_command(webhook_id: int, page: int, per_page: int) -> None:
    """A webhook's deliveries, newest first: event, status, response code, attempts, times, error."""
    from core.service import webhooks as service

    def when(moment: object) -> str:
        return "-" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S")  # type: ignore[attr-defined]

    def action() -> tuple[list[str], int]:
        with _session() as session:
            rows, total = service.deliveries(session, cli_actor(), webhook_id, page=page, per_page=per_page)
            return [
                f"{d.id}\t{d.event}\t{d.status}\t{d.response_code or '-'}\t{d.attempts}\t{when(d.created_at)}\t"
                f"{when(d.next_attempt_at if d.status == 'pending' else d.finished_at)}\t{d.last_error or ''}"
                for d in rows
            ], total

    lines, total = run_db_command(action)
    click.echo("\n".join(["id\tevent\tstatus\tcode\tattempts\tcreated\tnext/finished\terror", *lines]))
    click.echo(f"({total} deliveries)")


@webhooks.command(name="test", cls=UserCommand)
@click.argument("webhook_id", type=int)
def test_command(webhook_id: int) -> None:
    """Queue a webhook.test delivery to one webhook (a worker, or `leukemia webhooks deliver`, sends it)."""
    from core.service import webhooks as service

    def action() -> int:
        with _session() as session:
            return service.send_test(session, cli_actor(), webhook_id).id

    click.echo(f"delivery {run_db_command(action)} queued")


@webhooks.command(name="redeliver", cls=UserCommand)
@click.argument("delivery_id", type=int)
def redeliver_command(delivery_id: int) -> None:
    """Send a delivery's body again, as a new delivery."""
    from core.service import webhooks as service

    def action() -> int:
        with _session() as session:
            return service.send_again(session, cli_actor(), delivery_id).id

    click.echo(f"delivery {run_db_command(action)} queued")


@webhooks.command(name="deliver", cls=UserCommand)
def deliver_command() -> None:
    """Send the deliveries that are due now, once (workers do this every second)."""
    from core.service import webhooks as service
    from core.service.settings import get_settings

    tally = run_db_command(lambda: service.deliver_due(get_settings(), limit=1000))
    click.echo(f"delivered {tally['delivered']}, to retry {tally['pending']}, failed {tally['failed']}")
