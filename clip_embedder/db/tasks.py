"""Ingest tasks (one per uploaded or scanned file, following its queue job) and the queue's statistics."""
from __future__ import annotations

from psycopg.rows import class_row

from clip_embedder.db.common import Repository, one
from clip_embedder.db.records import TaskRecord

#: the latest follow-up enrichment job of the image `im` (lock `enrich:<sha256>`, see intake.queue.defer_enrich_job)
_ENRICH_JOIN = """
LEFT JOIN LATERAL (SELECT e.status FROM procrastinate_jobs e WHERE e.queue_name = 'enrich'
                   AND e.lock = 'enrich:' || im.sha256 ORDER BY e.id DESC LIMIT 1) ej ON true
"""
#: where the text in the image `im` stands: its enrichment job's state, else what its enrichment signature says
#: (read inline: done; `ocr=off`: not run); NULL while the image is not written yet
_OCR_STATE = """
CASE WHEN im.id IS NULL THEN NULL
     WHEN ej.status = 'todo' THEN 'queued' WHEN ej.status = 'doing' THEN 'running'
     WHEN ej.status IN ('failed', 'cancelled', 'aborted') THEN 'failed'
     WHEN ej.status = 'succeeded' OR (im.enrichment IS NOT NULL AND im.enrichment NOT LIKE '%%;ocr=off') THEN 'done'
     ELSE 'not run' END"""
#: the latest analysis job of the image `im` (lock `analyse:<sha256>`) and whether an analysis is stored
_ANALYSE_JOIN = """
LEFT JOIN LATERAL (SELECT a.status FROM procrastinate_jobs a WHERE a.queue_name = 'enrich'
                   AND a.lock = 'analyse:' || im.sha256 ORDER BY a.id DESC LIMIT 1) aj ON true
LEFT JOIN analyses an ON an.image_id = im.id
"""
#: where the analysis of the image `im` stands: queued | running | done | failed; NULL when none was asked for
_ANALYSIS_STATE = """
CASE WHEN im.id IS NULL THEN NULL
     WHEN aj.status = 'todo' THEN 'queued' WHEN aj.status = 'doing' THEN 'running'
     WHEN aj.status IN ('failed', 'cancelled', 'aborted') THEN 'failed'
     WHEN aj.status = 'succeeded' OR an.image_id IS NOT NULL THEN 'done'
     ELSE NULL END"""
_TASK_SELECT = f"""
SELECT t.id::text AS id, t.batch::text AS batch, t.sha256, t.file_name,
       CASE WHEN t.status = 'failed' THEN 'failed'
            WHEN j.id IS NULL THEN t.status
            WHEN j.status = 'todo' THEN 'queued'
            WHEN j.status = 'doing' THEN 'running'
            WHEN j.status = 'succeeded' THEN 'succeeded'
            ELSE 'failed' END AS status,
       coalesce(j.attempts, 0) + CASE WHEN j.status = 'doing' THEN 1 ELSE 0 END AS attempts,
       CASE WHEN t.error IS NULL AND j.status IN ('failed', 'cancelled', 'aborted')
            THEN 'the ' || CASE WHEN t.kind = 'receipt' THEN 'receipt' ELSE 'indexing' END || ' job '
                 || j.status::text || ' after ' || j.attempts || ' attempt(s)'
            ELSE t.error END AS error,
       im.id AS image_id, t.job_id, t.created_at, greatest(t.updated_at, j.scheduled_at) AS updated_at,
       {_OCR_STATE} AS ocr, {_ANALYSIS_STATE} AS analysis, t.kind, rc.id AS receipt_id
FROM tasks t
LEFT JOIN procrastinate_jobs j ON j.id = t.job_id
LEFT JOIN images im ON im.sha256 = t.sha256 AND t.kind = 'image'
LEFT JOIN receipts rc ON rc.sha256 = t.sha256 AND t.kind = 'receipt'
{_ENRICH_JOIN}{_ANALYSE_JOIN}"""


class TaskRepository(Repository):
    """`tasks` joined with `procrastinate_jobs`: what a client polls; queue depth and live workers."""

    def add(self, *, task_id: str, batch: str, sha256: str, file_name: str, job_id: int | None,
            status: str = "queued", kind: str = "image") -> None:
        """Record an ingest task of a photo to index (`kind` 'image') or a receipt to read ('receipt'); its status
        follows its job (`status` is used when `job_id` is None)."""
        with self.conn() as c:
            c.execute("INSERT INTO tasks (id, batch, sha256, file_name, job_id, status, kind) "
                      "VALUES (%s,%s,%s,%s,%s,%s,%s)", (task_id, batch, sha256, file_name, job_id, status, kind))

    def get(self, *, task_id: str | None = None, batch: str | None = None, limit: int = 1000
                  ) -> list[TaskRecord]:
        """Tasks by id or by batch (oldest first), with the status of their queue jobs."""
        where, args = ("t.id = %s", (task_id,)) if task_id else ("t.batch = %s", (batch,))
        with self.conn() as c, c.cursor(row_factory=class_row(TaskRecord)) as cur:
            return cur.execute(_TASK_SELECT + f" WHERE {where} ORDER BY t.created_at, t.file_name LIMIT %s",
                               (*args, limit)).fetchall()

    def enrichment_states(self, image_id: int) -> dict[str, str]:
        """Where the follow-up work on an image stands: `ocr` (queued | running | done | failed | not run) and, when
        one was asked for, `analysis` (queued | running | done | failed); empty for no such image."""
        with self.conn() as c:
            r = c.execute(f"SELECT {_OCR_STATE} AS ocr, {_ANALYSIS_STATE} AS analysis FROM images im {_ENRICH_JOIN}"
                          f"{_ANALYSE_JOIN} WHERE im.id = %s", (image_id,)).fetchone()
        return {k: v for k, v in r.items() if v is not None} if r else {}

    def active_job_for(self, sha256: str, lock_prefix: str = "") -> int | None:
        """The id of a queued or running indexing job for these bytes (with `lock_prefix` "receipt:", their receipt
        job), if there is one."""
        with self.conn() as c:
            r = c.execute("SELECT id FROM procrastinate_jobs WHERE lock = %s AND status IN ('todo', 'doing') "
                          "ORDER BY id LIMIT 1", (lock_prefix + sha256,)).fetchone()
        return int(r["id"]) if r else None

    def finish(self, sha256: str, *, error: str | None, kind: str = "image") -> None:
        """Mark every open task of these bytes (of this `kind`) failed with `error` (a permanent failure), or clear
        the error of a success."""
        with self.conn() as c:
            if error is None:
                c.execute("UPDATE tasks SET error = NULL, updated_at = now() WHERE sha256 = %s AND kind = %s",
                          (sha256, kind))
            else:
                c.execute("UPDATE tasks SET status = 'failed', error = %s, updated_at = now() "
                          "WHERE sha256 = %s AND kind = %s AND status <> 'succeeded'", (error, sha256, kind))

    def note_error(self, sha256: str, error: str, kind: str = "image") -> None:
        """Keep the last (retryable) error of the tasks of these bytes (of this `kind`)."""
        with self.conn() as c:
            c.execute("UPDATE tasks SET error = %s, updated_at = now() WHERE sha256 = %s AND kind = %s "
                      "AND status = 'queued'", (error, sha256, kind))

    def active_workers(self, seconds: float = 60.0) -> int:
        """Queue workers whose last heartbeat is at most `seconds` old."""
        with self.conn() as c:
            return int(one(c.execute("SELECT count(*) AS n FROM procrastinate_workers WHERE last_heartbeat > "
                                      "now() - make_interval(secs => %s)", (seconds,)))["n"])

    def queue_depth(self, queue: str | None = None) -> dict[str, int]:
        """Number of queue jobs by procrastinate status (todo, doing, succeeded, failed, …), of one queue (`index`,
        `enrich`) or of all."""
        with self.conn() as c:
            return {r["status"]: int(r["n"]) for r in c.execute(
                "SELECT status::text AS status, count(*) AS n FROM procrastinate_jobs "
                "WHERE %(q)s::text IS NULL OR queue_name = %(q)s GROUP BY 1", {"q": queue})}
