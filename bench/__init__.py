"""`make bench` / `python -m bench`: mongo-backfill against the database's ceiling and a naive loop.

Everything runs in one process tree on one machine: the same SecantusDB, Redis and catalog
stand-in serve every scenario, so the ratios between rows are what the numbers mean.
"""
