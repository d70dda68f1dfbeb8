"""Shared CLI plumbing: one-line errors with exit code 2 unless --debug."""
from __future__ import annotations

import signal
import sys
import traceback

import click

from latcpb.errors import LatcpbInputError

EXIT_BAD_INPUT = 2


def run_reporting_errors(prog: str, debug: bool, body) -> None:
    """Run ``body()``; bad input -> 'prog: error: ...' on stderr and exit 2 (traceback only with --debug).

    SIGTERM (kill, batch schedulers) is turned into KeyboardInterrupt while ``body`` runs, so that partial output
    is removed as on Ctrl-C.
    """
    previous = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, _interrupt)
    except ValueError:  # not the main thread (e.g. called from a worker): leave signals alone
        previous = None
    try:
        body()
    except LatcpbInputError as err:
        if debug:
            traceback.print_exc()
        click.echo(f"{prog}: error: {err}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        click.echo(f"{prog}: interrupted; no output written", err=True)
        sys.exit(130)
    except Exception as err:  # anything unexpected still gets one line unless --debug
        if debug:
            raise
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        click.echo(f"{prog}: error: {type(err).__name__}: {first} (rerun with --debug for details)", err=True)
        sys.exit(1)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _interrupt(signum, frame):
    raise KeyboardInterrupt
