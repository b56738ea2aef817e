"""Upper bounds of the settings' durations. A duration of seconds past them is a typo or a YAML
``.inf`` meant as "never": Python's waits and socket timeouts overflow on such values
(``kafka.connect_timeout_s: .inf`` was an internal error, OverflowError, until 2026-12-04), so
the settings refuse them in one line instead."""

HOUR_S = 3600.0
DAY_S = 24 * HOUR_S
