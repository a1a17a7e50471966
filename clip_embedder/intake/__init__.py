"""Intake: validated uploads and folder scans, content-addressed originals, the durable queue (procrastinate, in
PostgreSQL) and the workers that index its jobs."""
