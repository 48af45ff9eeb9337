"""GET /dashboard: experiments, arms, weights, comparisons and charts, for an admin."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, RedirectResponse

from service.api.deps import ADMIN_COOKIE, AdminDep, ExperimentsDep, StateDep
from service.api.guard import same_secret
from service.errors import AuthenticationError
from service.experiments.dashboard import render

router = APIRouter()


@router.get("/dashboard/login")
def dashboard_login(token: str, state: StateDep) -> RedirectResponse:
    """Trades the admin token for an HTTP-only cookie, so it leaves the address bar."""
    expected = state.settings.admin_token or ""
    if not expected or not same_secret(token, expected):
        raise AuthenticationError("a valid admin token is required")
    response = RedirectResponse("/dashboard", status_code=303)
    response.set_cookie(ADMIN_COOKIE, token, httponly=True, samesite="strict", path="/dashboard")
    return response


@router.get("/dashboard", response_class=HTMLResponse)
def dashboard(actor: AdminDep, experiments: ExperimentsDep) -> HTMLResponse:
    """Server-rendered HTML with inline SVG; refreshes itself every 30 s."""
    found = [experiments.results(stored.spec.name) for stored in experiments.experiments()]
    return HTMLResponse(render(found))
