"""Model regressions: exact replay of recorded runs (replay.py), candidate re-runs of the window's
decided tasks (tasks.py, candidates.py, suite.py), paired statistics (stats.py), the report
(report.py), and the promotion gate (gate.py). See docs/regression.md."""
