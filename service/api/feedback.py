"""POST /v1/feedback: a user's score of a response, counted for the arm that served it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header

from service.api.deps import ClientDep, ExperimentsDep, response_owner
from service.experiments.protocol import FeedbackOut, FeedbackRequest

router = APIRouter()


@router.post("/v1/feedback")
def post_feedback(
    body: FeedbackRequest,
    experiments: ExperimentsDep,
    caller: ClientDep,
    x_ladder_user: Annotated[str | None, Header(max_length=256)] = None,
) -> FeedbackOut:
    """Stores the score before answering, so an acknowledged score is never lost; only the
    caller the response was served to may (its API key; with keys off, its user, else its
    address)."""
    owner = response_owner(caller, body.user or x_ladder_user)
    return experiments.feedback(body.response_id, body.score, body.comment, owner)
