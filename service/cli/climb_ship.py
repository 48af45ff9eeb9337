"""What a climb ships: a draft A/B experiment between the winner and production."""

from __future__ import annotations

from pathlib import Path

from service.errors import InvalidChange
from service.experiments import repository
from service.experiments.spec import ArmSpec, ExperimentSpec
from service.experiments.store import migrate, open_database
from service.routing.configs import ConfigurationError, load_configurations
from service.settings import Settings

ACTOR = "ladder climb"


def create_experiment(
    settings: Settings, configurations: Path, name: str, against: str, winner: str
) -> str:
    """Creates (does not start) experiment `name`: `against` as control, `winner` as treatment,
    half the new users each, capturing the model name `against`. ValueError when refused."""
    try:
        served = load_configurations(configurations, [], None).configurations
    except ConfigurationError as error:
        raise ValueError(str(error)) from None
    if against not in served:
        raise ValueError(f"{against!r} is not a configuration in {configurations}")
    spec = ExperimentSpec(
        name=name,
        model=against,
        arms=(
            ArmSpec(name="control", configuration=against, weight=50),
            ArmSpec(name="climbed", configuration=winner, weight=50),
        ),
        control="control",
        status="draft",
    )
    database = open_database(settings.experiments_db_url, settings.db_busy_timeout_s)
    try:
        migrate(database)
        stored = repository.create(database, spec, ACTOR, list(served))
    except InvalidChange as error:
        raise ValueError(str(error)) from None
    finally:
        database.dispose()
    return (
        f"created experiment {stored.spec.name!r} (draft, not started): {against} (control) vs"
        f" {winner}, 50/50 on model {against!r}; start it with `ladder ab start {name}`"
    )
