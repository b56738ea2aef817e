"""Spark batch jobs over verdict history: backfill, aggregates, offenders, campaigns, shadow.

Each job is one module with a pure-ish ``run(spark, ...) -> DataFrame`` (no I/O besides
reading its inputs), a ``write``/``main(argv)`` edge for ``spark-submit pipeline/spark/<job>.py``,
and a command in :mod:`pipeline.spark.cli` (``misuse-monitor spark <job>``). See docs/spark.md.
"""
