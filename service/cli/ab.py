"""`ladder ab ...`: the admin API's experiment operations from the command line.

The commands talk to a running service (`--url`, LADDER_ADMIN_TOKEN), so a change is validated
against the configurations it serves, audited, and live on every replica like any other.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    import httpx

app = typer.Typer(help="A/B experiments on a running service.", no_args_is_help=True)
UrlOption = Annotated[
    str | None, typer.Option("--url", help="The service; default http://LADDER_HOST:LADDER_PORT.")
]
ActorOption = Annotated[str | None, typer.Option("--actor", help="Who makes the change.")]
ArmOption = Annotated[str | None, typer.Option("--arm", help="Only this arm (not the control).")]


@contextmanager
def _request(
    method: str,
    path: str,
    url: str | None,
    actor: str | None,
    body: Any = None,
    params: dict[str, str] | None = None,
) -> Iterator[httpx.Response]:
    """One admin request, its body not yet read; prints the error and exits 1 when refused."""
    import httpx

    from service.cli.common import fail, settings

    config = settings()
    if not config.admin_token:
        raise fail("LADDER_ADMIN_TOKEN is not set")
    base = url or f"http://{config.host}:{config.port}"
    headers = {
        "authorization": f"Bearer {config.admin_token}",
        "x-ladder-actor": actor or f"cli:{os.environ.get('USER', 'unknown')}",
    }
    request = {"json": body, "params": params, "headers": headers, "timeout": 30}
    try:
        with httpx.stream(method, base + path, **request) as response:
            if response.status_code >= 400:
                response.read()
                try:
                    message = response.json()["error"]["message"]
                except (ValueError, KeyError, TypeError):
                    message = response.text
                raise fail(f"{response.status_code}: {message}", code=1)
            yield response
    except httpx.HTTPError as error:
        raise fail(f"cannot reach {base}: {error}", code=1) from None


def _call(
    method: str,
    path: str,
    url: str | None,
    actor: str | None,
    body: Any = None,
    params: dict[str, str] | None = None,
) -> Any:
    """One admin request's JSON answer."""
    with _request(method, path, url, actor, body, params) as response:
        response.read()
        return response.json()


def _show(found: Any) -> None:
    typer.echo(json.dumps(found, indent=2))


@app.command("list")
def list_experiments(url: UrlOption = None) -> None:
    """Lists every experiment."""
    _show(_call("GET", "/admin/experiments", url, None))


@app.command()
def show(name: str, url: UrlOption = None) -> None:
    """Shows one experiment."""
    _show(_call("GET", f"/admin/experiments/{name}", url, None))


@app.command()
def create(
    spec: Annotated[Path, typer.Argument(help="A JSON or YAML file with the experiment.")],
    url: UrlOption = None,
    actor: ActorOption = None,
) -> None:
    """Creates an experiment from a file (name, model, arms, control, stickiness, status)."""
    import yaml

    from service.cli.common import fail

    try:
        body = yaml.safe_load(spec.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise fail(f"cannot read {spec}: {error}") from None
    _show(_call("POST", "/admin/experiments", url, actor, body))


@app.command()
def weights(
    name: str,
    assignments: Annotated[list[str], typer.Argument(help="ARM=WEIGHT, one or more.")],
    rebucket: Annotated[
        bool, typer.Option("--rebucket", help="Re-assign returning users by the new weights too.")
    ] = False,
    url: UrlOption = None,
    actor: ActorOption = None,
) -> None:
    """Changes weights; users already assigned keep their arm unless --rebucket."""
    from service.cli.common import fail

    parsed: dict[str, float] = {}
    for item in assignments:
        arm, _, value = item.partition("=")
        try:
            parsed[arm] = float(value)
        except ValueError:
            raise fail(f"expected ARM=WEIGHT, got {item!r}") from None
    body = {"weights": parsed, "rebucket": rebucket}
    _show(_call("POST", f"/admin/experiments/{name}/weights", url, actor, body))


@app.command()
def assignment(
    name: str,
    user: Annotated[str | None, typer.Option(help="The request's `user`.")] = None,
    header: Annotated[str | None, typer.Option(help="The X-Ladder-User header.")] = None,
    key: Annotated[str | None, typer.Option(help="An API key digest, sha256:<hex>.")] = None,
    url: UrlOption = None,
) -> None:
    """The arm a user has or would get, and why (a dry run: records nothing)."""
    given = {"user": user, "header": header, "key": key}
    params = {field: value for field, value in given.items() if value is not None}
    _show(_call("GET", f"/admin/experiments/{name}/assignment", url, None, params=params))


@app.command()
def exposures(
    name: str,
    form: Annotated[str, typer.Option("--format", help="csv or jsonl.")] = "csv",
    since: Annotated[
        str | None, typer.Option(help="Only from then: Unix seconds or ISO 8601.")
    ] = None,
    url: UrlOption = None,
) -> None:
    """Streams every exposure with its outcome and feedback score to standard output."""
    params = {"format": form} | ({"since": since} if since else {})
    path = f"/admin/experiments/{name}/exposures"
    with _request("GET", path, url, None, params=params) as response:
        for text in response.iter_text():
            typer.echo(text, nl=False)


@app.command()
def start(
    name: str, arm: ArmOption = None, url: UrlOption = None, actor: ActorOption = None
) -> None:
    """Starts or resumes an experiment, or with --arm resumes one paused arm."""
    path = (
        f"/admin/experiments/{name}/arms/{arm}/resume"
        if arm
        else f"/admin/experiments/{name}/start"
    )
    _show(_call("POST", path, url, actor))


@app.command()
def pause(
    name: str, arm: ArmOption = None, url: UrlOption = None, actor: ActorOption = None
) -> None:
    """Pauses an experiment (everyone gets the control), or with --arm one arm (its users do)."""
    path = (
        f"/admin/experiments/{name}/arms/{arm}/pause" if arm else f"/admin/experiments/{name}/pause"
    )
    _show(_call("POST", path, url, actor))


@app.command()
def promote(name: str, arm: str, url: UrlOption = None, actor: ActorOption = None) -> None:
    """Gives one arm 100 % of the traffic and concludes the experiment."""
    _show(_call("POST", f"/admin/experiments/{name}/promote", url, actor, {"arm": arm}))


@app.command()
def rollback(
    name: str,
    version: Annotated[
        int | None, typer.Option(help="Version to restore; default previous.")
    ] = None,
    url: UrlOption = None,
    actor: ActorOption = None,
) -> None:
    """Restores an earlier version of an experiment."""
    body = {"version": version}
    _show(_call("POST", f"/admin/experiments/{name}/rollback", url, actor, body))


@app.command()
def results(name: str, url: UrlOption = None) -> None:
    """Per-arm measurements and the comparison against the control."""
    _show(_call("GET", f"/admin/experiments/{name}/results", url, None))


@app.command()
def audit(
    experiment: Annotated[str | None, typer.Option(help="Only this experiment.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    url: UrlOption = None,
) -> None:
    """The change log, newest first."""
    query = f"?limit={limit}" + (f"&experiment={experiment}" if experiment else "")
    _show(_call("GET", f"/admin/audit{query}", url, None))


@app.command()
def reload(url: UrlOption = None, actor: ActorOption = None) -> None:
    """Reloads the configurations file on the service (refused, with its reason, if invalid)."""
    _show(_call("POST", "/admin/configurations/reload", url, actor))


@app.command()
def plan(
    baseline: Annotated[float, typer.Option(help="Control's positive-feedback share, e.g. 0.30.")],
    mde: Annotated[float, typer.Option(help="Smallest absolute lift to detect, e.g. 0.03.")],
    traffic: Annotated[str, typer.Option(help="New users per day, all arms: 5000 or 5000/day.")],
    arms: Annotated[int, typer.Option(min=2, max=20, help="Arms, the control included.")] = 2,
    alpha: Annotated[float, typer.Option(help="False-positive rate over all arms.")] = 0.05,
    power: Annotated[float, typer.Option(help="Chance to detect a lift of MDE.")] = 0.8,
) -> None:
    """Users per arm and days an experiment needs, for ladder's always-valid test (offline)."""
    from service.cli.common import fail
    from service.experiments import planning

    try:
        per_day = float(traffic.removesuffix("/day"))
        found = planning.plan(baseline, mde, per_day, arms, alpha, power)
    except ValueError as error:
        raise fail(f"cannot plan: {error}") from None
    typer.echo(
        f"baseline {baseline:.1%}, lift {mde * 100:+.1f} points, {arms} arms, "
        f"alpha {found.alpha_per_comparison:.3g} per comparison, power {power:.0%}, "
        f"{per_day:,.0f} users/day"
    )
    for label, users, days in (
        ("sequential (mSPRT, read any time)", found.users_per_arm, found.days),
        ("fixed sample (one look at the end)", found.fixed_users_per_arm, found.fixed_days),
    ):
        typer.echo(
            f"{label:<36} {users:>10,} users per arm {users * arms:>11,} in all {days:>7.1f} days"
        )
