"""Pipeline analytics from BigQuery: ``make report`` (``python -m tools.ops.report``).

- ``questions``: the questions (``queries/*.sql``), their answers as text tables and PNG charts;
- ``page``, ``svg``: the same answers as one self-contained HTML page;
- ``history``, ``seed``: a repeatable synthetic history to report on without a project (and to
  test with), and the rows bigquery-metrics writes for it;
- ``chromium``: headless Chromium, to check the page renders and to take its screenshot;
- ``__main__``: the command line.
"""
