"""The built-in learning-rate schedules, registered through the same hook a plugin uses."""

from zoo.hookspecs import hookimpl


@hookimpl
def register_schedules(register):
    from zoo.schedules import BUILTIN_SCHEDULES

    for schedule in BUILTIN_SCHEDULES:
        register(schedule.name, schedule)
