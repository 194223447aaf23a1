"""Log hygiene for a local Ray: a setup hook every Ray worker process runs.

Kept apart from trainer.py on purpose: the hook is imported by every worker process of the
local Ray (Ray Data's and Ray Train's helper actors too), so it must not pull in torch or models.
"""

from __future__ import annotations

import logging

#: Ray Train's placement-group cleaner asks the State API, which lives in the dashboard, whether
#: the controller is alive, once a second; a local Ray started without the dashboard (see
#: fade.distributed.trainer.start_ray) answers with this warning every time, a third of a run's log.
_STATE_API_WARNING = "Failed to query Ray Train Controller actor state"
_CLEANER_LOGGER = "ray.train.v2._internal.execution.controller.placement_group_cleaner"


def quiet_state_api_warnings() -> None:
    """Runs in every worker of a local Ray: drops the cleaner's State API warning, and only it."""
    logging.getLogger(_CLEANER_LOGGER).addFilter(
        lambda record: not record.getMessage().startswith(_STATE_API_WARNING)
    )
