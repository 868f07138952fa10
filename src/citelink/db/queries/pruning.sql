-- Background pruning (citelink/db/pruning.py): one batch per statement.

-- name: prune_audit_log
-- One batch of the audit log by id, after id $2: the rows of it older than
-- $1 days are deleted. (rows deleted, rows in the batch, its last id.)
WITH batch AS (SELECT id, created_at FROM audit_log WHERE id > $2 ORDER BY id LIMIT $3),
     pruned AS (
         DELETE FROM audit_log AS a USING batch AS b
         WHERE a.id = b.id AND b.created_at < now() - make_interval(days => $1)
         RETURNING 1
     )
SELECT (SELECT count(*) FROM pruned) AS deleted, count(*) AS scanned, max(id) AS last_id
FROM batch;

-- name: prune_refresh_families
-- One batch of expired refresh token families (no token of theirs is valid).
WITH pruned AS (
    DELETE FROM refresh_token_family
    WHERE id IN (SELECT id FROM refresh_token_family
                 WHERE expires_at < now() ORDER BY expires_at LIMIT $1)
    RETURNING 1
)
SELECT count(*) FROM pruned;
