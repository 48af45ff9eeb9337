"""GET /dashboard: experiments, arms, weights, comparisons and charts, for an admin who logged in
with the admin token through a POST form (the token never enters a URL or a cookie)."""

from __future__ import annotations

from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from service.api.deps import ADMIN_COOKIE, AdminDep, ExperimentsDep, StateDep, client_address
from service.api.guard import same_secret
from service.api.sessions import new_session
from service.experiments.dashboard import STYLE, collect, render

router = APIRouter()
# No script, no remote resource, no framing; forms post only back here.
PAGE_POLICY = {
    "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:;"
    " form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
}
LOGIN_PAGE = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>ladder login</title>'
    f"<style>{STYLE}</style></head><body><h1>ladder experiments</h1>"
    '<form method="post" action="/dashboard/login"><label>Admin token '
    '<input type="password" name="token" autocomplete="current-password" required></label> '
    '<button type="submit">Log in</button></form></body></html>'
)


@router.get("/dashboard/login", response_class=HTMLResponse)
def login_form() -> HTMLResponse:
    """The login form."""
    return HTMLResponse(LOGIN_PAGE, headers=PAGE_POLICY)


@router.post("/dashboard/login")
async def login(request: Request, state: StateDep) -> RedirectResponse:
    """Trades the admin token (form field `token`) for a signed session cookie: HTTP-only,
    same-site strict, `Secure` over HTTPS; failed attempts count against the address."""
    expected = state.settings.admin_token or ""
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    offered = (form.get("token") or [""])[0].strip()

    def identify() -> str | None:
        return "dashboard" if expected and same_secret(offered, expected) else None

    refusal = "a valid admin token is required"
    state.guard.authenticated(client_address(request), identify, refusal)
    lifetime = state.settings.dashboard_session_s
    response = RedirectResponse("/dashboard", status_code=303)
    response.set_cookie(
        ADMIN_COOKIE,
        new_session(expected, lifetime),
        max_age=lifetime,
        path="/dashboard",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return response


@router.get("/dashboard", response_class=HTMLResponse)
def dashboard(actor: AdminDep, experiments: ExperimentsDep, state: StateDep) -> HTMLResponse:
    """Server-rendered HTML with inline SVG; refreshes itself every 30 s."""
    panels = collect(experiments, state.settings.dashboard_audit_entries)
    return HTMLResponse(render(panels), headers=PAGE_POLICY)
