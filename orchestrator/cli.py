"""The `backfill` command: parses, calls a verb, prints, maps errors to exit codes. Nothing else."""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
from typing import NoReturn

import click

from backfill_engine.redact import redact_text, redacted_traceback
from backfill_engine.settings import Settings, SettingsError
from orchestrator.context import AppContext
from orchestrator.errors import BackfillError, first_line, mongo_error_line
from orchestrator.stack_state import with_running_stack

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--log-json", is_flag=True, help="Log one JSON object per line (for machines).")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.pass_context
def cli(ctx: click.Context, log_json: bool, verbose: int) -> None:
    """mongo-backfill: ordered MongoDB migrations and resumable, rate-limited backfills."""
    from orchestrator.logs import configure_logging

    # A `backfill up` running on this data directory fills in what the environment leaves unset.
    settings = with_running_stack(Settings.from_env(), os.environ)
    configure_logging(
        json_lines=log_json or settings.log_json, verbosity=verbose, settings=settings
    )
    app = AppContext(settings)
    ctx.obj = app
    ctx.call_on_close(app.close)


def _register_commands() -> None:
    from orchestrator.job_cli import JOB_COMMANDS
    from orchestrator.migrate_cli import migrate
    from orchestrator.revert_cli import REVERT_COMMANDS
    from orchestrator.stack_cli import STACK_COMMANDS
    from orchestrator.tune_cli import TUNE_COMMANDS

    cli.add_command(migrate)
    for command in (*JOB_COMMANDS, *REVERT_COMMANDS, *TUNE_COMMANDS, *STACK_COMMANDS):
        cli.add_command(command)


_register_commands()


def _fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _leave_driver_threads_at_exit() -> None:
    """Exit without waiting for the MongoDB driver's monitor threads to wake.

    pymongo joins each of them at exit, and they sleep in half-second steps: every command
    waited up to 0.5 s after its work was done. They are daemon threads with nothing to
    flush (a client's writes are acknowledged or failed before the call returns), so the
    interpreter may drop them, as it does any daemon thread.
    """
    with contextlib.suppress(ImportError, AttributeError):
        from pymongo.synchronous import monitor

        atexit.unregister(monitor._shutdown_resources)


def main(argv: list[str] | None = None) -> None:
    """Entry point: one clear line and a non-zero exit for every failure we can name."""
    import pymongo.errors
    import redis
    import requests

    from backfill_engine.http_client import SourceError
    from backfill_migrations.errors import MigrationError

    # SIGTERM unwinds like Ctrl-C, so servers and workers we started are stopped.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    _leave_driver_threads_at_exit()
    secrets: tuple[str, ...] = ()
    with contextlib.suppress(SettingsError):
        secrets = with_running_stack(Settings.from_env(), os.environ).secrets
    try:
        rv = cli.main(args=argv, prog_name="backfill", standalone_mode=False)
        code = rv if isinstance(rv, int) and not isinstance(rv, bool) else 0
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        _fail("aborted", EXIT_INTERRUPTED)
    except click.UsageError as exc:
        # One line, like every other failure; the command path says where --help lives.
        where = exc.ctx.command_path if exc.ctx else "backfill"
        _fail(f"{exc.format_message()} (see `{where} --help`)", EXIT_USAGE)
    except click.ClickException as exc:
        _fail(exc.format_message(), exc.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted; servers stopped, progress is checkpointed", EXIT_INTERRUPTED)
    except (BackfillError, MigrationError, SettingsError, SourceError) as exc:
        _fail(redact_text(str(exc), secrets))
    except pymongo.errors.PyMongoError as exc:
        _fail(redact_text(f"MongoDB: {mongo_error_line(exc)}", secrets))
    except redis.RedisError as exc:
        _fail(redact_text(f"Redis: {first_line(exc)}", secrets))
    except requests.RequestException as exc:
        _fail(redact_text(f"source: {first_line(exc)}", secrets))
    except Exception as exc:
        if os.environ.get("BACKFILL_DEBUG"):
            # The traceback, but through the same scrubbing as every other line we print.
            click.echo(redacted_traceback(exc, secrets).rstrip("\n"), err=True)
            sys.exit(EXIT_ERROR)
        _fail(redact_text(f"unexpected {type(exc).__name__}: {exc}", secrets))
    sys.exit(code)


if __name__ == "__main__":
    main()
