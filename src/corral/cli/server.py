"""`corral server` and `corral user add|token|list`."""

from __future__ import annotations

from typing import Annotated

import typer

from corral.cli import ScopeRepoOption, TeamOption, _services, err, out, sigterm_as_interrupt
from corral.errors import ServeError, StoreError

app = typer.Typer(no_args_is_help=True, help="Users of corral server: add them, give them API tokens.")


def register(root: typer.Typer) -> None:
    @root.command()
    def server(
        listen: Annotated[str, typer.Option(help="HOST:PORT to serve on.")] = "127.0.0.1:8750",
        warm: Annotated[
            int, typer.Option(help="Keep N pre-created, self-tested sandboxes ready per image (0: none).")
        ] = 0,
        team: TeamOption = None,
        repo: ScopeRepoOption = None,
    ) -> None:
        """Serve the reviewer's dashboard and the run API (runs submitted to it execute here)."""
        from corral.web.serve import recover, start, start_pool

        # SIGTERM (a service manager's stop) must stop the server as Ctrl-C does: runs marked, the pool
        # removed, the stores closed, not the finally skipped.
        sigterm_as_interrupt()
        services = _services(team=team, repo=repo)
        failed = recover(services)
        if failed:
            err.print(f"marked failed after a restart: {', '.join(failed)}", highlight=False)
        if warm:
            services.warm_pool = start_pool(services, warm)
        try:
            handle = start(services, listen)
            err.print(
                f"corral server on http://{listen} (team {services.team}); Ctrl-C stops it", highlight=False
            )
            try:
                # A wait in short joins, not one unbounded lock wait: a signal that the kernel hands
                # to another thread only trips a flag, which the main thread acts on when it next
                # runs Python, and an unbounded wait would never do so.
                handle.wait()
            except KeyboardInterrupt:
                pass
            else:
                raise ServeError(
                    "corral server stopped serving on its own",
                    hint="see the error above, then start it again",
                )
            finally:
                handle.stop()
        finally:
            if services.warm_pool is not None:
                services.warm_pool.close()
            services.close()


@app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="The user's name.")],
    role: Annotated[str, typer.Option(help="viewer, approver or admin.")] = "viewer",
    password: Annotated[
        str | None, typer.Option(help="Sign-in password (prompted when omitted; empty: token only).")
    ] = None,
    team: TeamOption = None,
    repo: ScopeRepoOption = None,
) -> None:
    """Add a user of the team."""
    from corral.state.users import ROLES, add_user

    if role not in ROLES:
        raise StoreError(
            f"role {role!r} is not one of {', '.join(ROLES)}", hint="--role viewer|approver|admin"
        )
    if password is None:
        password = typer.prompt(
            "password (empty: token only)", default="", hide_input=True, show_default=False
        )
    services = _services(team=team, repo=repo)
    try:
        user = add_user(services.state(), name, role, password)
    finally:
        services.close()
    out.print(f"user {user.name} ({user.role}) added to team {user.team}", highlight=False, markup=False)


@app.command("password")
def password(
    name: Annotated[str, typer.Argument(help="The user's name.")],
    new_password: Annotated[
        str | None,
        typer.Option("--password", help="The new password (prompted when omitted; empty: token only)."),
    ] = None,
    team: TeamOption = None,
    repo: ScopeRepoOption = None,
) -> None:
    """Set a user's sign-in password; every session signed in with the old one ends."""
    from corral.state.users import set_password

    if new_password is None:
        new_password = typer.prompt(
            "new password (empty: token only)", default="", hide_input=True, show_default=False
        )
    services = _services(team=team, repo=repo)
    try:
        ended = set_password(services.state(), name, new_password)
    finally:
        services.close()
    out.print(f"password of {name} set; {ended} session(s) ended", highlight=False, markup=False)


@app.command("token")
def token(
    name: Annotated[str, typer.Argument(help="The user's name.")],
    team: TeamOption = None,
    repo: ScopeRepoOption = None,
) -> None:
    """Print a new API token for the user (it replaces their previous one; it is shown only once)."""
    from corral.state.users import new_token

    services = _services(team=team, repo=repo)
    try:
        print(new_token(services.state(), name))
    finally:
        services.close()
