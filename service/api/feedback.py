"""POST /v1/feedback: a user's score of a response, counted for the arm that served it."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import ExperimentsDep
from service.experiments.protocol import FeedbackOut, FeedbackRequest

router = APIRouter()


@router.post("/v1/feedback")
def post_feedback(body: FeedbackRequest, experiments: ExperimentsDep) -> FeedbackOut:
    """Stores the score before answering, so an acknowledged score is never lost."""
    return experiments.feedback(body.response_id, body.score, body.comment)
