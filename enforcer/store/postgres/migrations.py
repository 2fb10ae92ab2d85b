"""The PostgreSQL store's schema, as numbered migrations applied by `enforcer store migrate`.

Each migration runs in its own transaction under an advisory lock, so two `migrate` runs (or
a Helm hook and an operator) never apply one twice; `enforcer_schema` lists what was applied.
Agents and the console only check the version at start (`check`): they never change the
schema, so their roles need no DDL rights.

Both tables are partitioned by day on the detection's time (UTC). Partitions are made on
demand by `enforcer_day_partitions(days)` and dropped whole by `enforcer_prune()` once older
than the `retention_days` setting, which makes pruning a day instant. Both functions run with
their owner's rights (SECURITY DEFINER), so a writer role only needs INSERT and UPDATE.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class SchemaError(Exception):
    """The database's schema is missing, older or newer than this enforcer's."""


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    sql: str


_V1 = r"""
CREATE TABLE enforcer_settings (key text PRIMARY KEY, value text NOT NULL);
INSERT INTO enforcer_settings VALUES ('retention_days', '30');

CREATE TABLE detections (
    id bigint NOT NULL,            -- stable: a hash of (node, detection key)
    node text NOT NULL,
    key text NOT NULL,
    time_ns bigint NOT NULL,
    rule text,
    priority smallint,
    output text,
    output_fields jsonb,
    tags jsonb,
    source text,
    hostname text,
    namespace text,
    pod text,
    trace_id text,
    complete boolean NOT NULL DEFAULT true,   -- false: made from a response, alert not seen
    -- Free text: every word of rule, output and output fields; punctuation splits words (so
    -- "shadow" finds /etc/shadow), as in the SQLite store's FTS5 index. Stored, so that a
    -- page that walks time order checks a row without recomputing it.
    search tsvector GENERATED ALWAYS AS (to_tsvector('simple', regexp_replace(
        coalesce(rule, '') || ' ' || coalesce(output, '') || ' ' ||
        coalesce(output_fields::text, ''), '[^[:alnum:]_]+', ' ', 'g'))) STORED,
    PRIMARY KEY (time_ns, id)
) PARTITION BY RANGE (time_ns);
CREATE INDEX det_id ON detections (id);
-- (column, time, id): the exact order of a page, so that a filtered page reads its rows off
-- the index newest first and stops (with time alone a common value was sorted whole).
CREATE INDEX det_node ON detections (node, time_ns, id);
CREATE INDEX det_rule ON detections (rule, time_ns, id);
CREATE INDEX det_priority ON detections (priority, time_ns, id);
CREATE INDEX det_namespace ON detections (namespace, time_ns, id);
CREATE INDEX det_pod ON detections (pod, time_ns, id);
CREATE INDEX det_text ON detections USING gin (search);

CREATE TABLE responses (
    id bigint NOT NULL,            -- stable: a hash of (node, the record as written)
    node text NOT NULL,
    det_id bigint NOT NULL,
    det_time_ns bigint NOT NULL,
    kind text NOT NULL,
    time_ns bigint NOT NULL,
    policy text,
    action text,
    dry_run boolean,
    outcome text,
    outcome_class text,
    error text,
    retries integer,
    latency_ms double precision,
    trace_id text,
    span_id text,
    record jsonb NOT NULL,         -- the audit record as the agent's JSONL log has it
    PRIMARY KEY (det_time_ns, id)
) PARTITION BY RANGE (det_time_ns);
CREATE INDEX resp_det ON responses (det_id, det_time_ns);
CREATE INDEX resp_node ON responses (node, det_time_ns);
-- A page filtered on a rare policy, action or outcome walks these newest first.
CREATE INDEX resp_policy ON responses (policy, det_time_ns, det_id);
CREATE INDEX resp_action ON responses (action, det_time_ns, det_id);
CREATE INDEX resp_outcome ON responses (outcome_class, det_time_ns, det_id);

CREATE FUNCTION enforcer_day_partitions(days date[]) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    d date;
    lo bigint;
    tbl text;
    made integer := 0;
BEGIN
    -- Agents race to make the first partition of a new day: one at a time.
    PERFORM pg_advisory_xact_lock(hashtext('enforcer_day_partitions'));
    FOREACH d IN ARRAY days LOOP
        lo := extract(epoch FROM d::timestamp)::bigint * 1000000000;
        FOREACH tbl IN ARRAY ARRAY['detections', 'responses'] LOOP
            IF to_regclass(tbl || '_' || to_char(d, 'YYYYMMDD')) IS NULL THEN
                EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%s) TO (%s)',
                               tbl || '_' || to_char(d, 'YYYYMMDD'), tbl, lo,
                               lo + 86400::bigint * 1000000000);
                made := made + 1;
            END IF;
        END LOOP;
    END LOOP;
    RETURN made;
END $$;

CREATE FUNCTION enforcer_prune() RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    keep integer;
    part record;
    dropped integer := 0;
BEGIN
    SELECT value::integer INTO keep FROM enforcer_settings WHERE key = 'retention_days';
    IF keep IS NULL OR keep <= 0 THEN
        RETURN 0;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('enforcer_day_partitions'));
    FOR part IN
        SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent IN ('detections'::regclass, 'responses'::regclass)
          AND c.relname ~ '_[0-9]{8}$'
          AND to_date(right(c.relname, 8), 'YYYYMMDD')
              < (now() AT TIME ZONE 'UTC')::date - keep
    LOOP
        EXECUTE format('DROP TABLE %I', part.relname);
        dropped := dropped + 1;
    END LOOP;
    RETURN dropped;
END $$;
REVOKE EXECUTE ON FUNCTION enforcer_day_partitions(date[]) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION enforcer_prune() FROM PUBLIC;
"""

# The alert's container (container.name, else container.id), a console filter.
_V2 = r"""
ALTER TABLE detections ADD COLUMN container text;
CREATE INDEX det_container ON detections (container, time_ns);
"""

# Counters per node and time block (counts.py): what the charts and the dry-run summary read
# instead of grouping millions of rows. Writers add to them in the transaction that stores
# the rows; enforcer_recount() counts everything again (here: the rows stored before version
# 3); enforcer_prune() drops the counters of the days it drops.
_V3 = r"""
CREATE TABLE counts (
    dim text NOT NULL,        -- rule, priority, outcome, dry-run
    span integer NOT NULL,    -- the block's length in minutes: 1, 15, 60 or 1440
    start bigint NOT NULL,    -- its first minute since the epoch (UTC), a multiple of span
    node text NOT NULL,
    value text NOT NULL,      -- dry-run: policy || chr(31) || action
    n bigint NOT NULL,
    last_ns bigint NOT NULL,  -- the newest detection time counted
    PRIMARY KEY (dim, span, start, node, value)
);

CREATE FUNCTION enforcer_recount() RETURNS bigint
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    made bigint;
BEGIN
    DELETE FROM counts;
    INSERT INTO counts (dim, span, start, node, value, n, last_ns)
    SELECT c.dim, s.span, c.minute / s.span * s.span, c.node, c.value, sum(c.n), max(c.last_ns)
    FROM (
        SELECT 'rule' AS dim, time_ns / 60000000000 AS minute, node, coalesce(rule, '') AS
               value, count(*) AS n, max(time_ns) AS last_ns
          FROM detections GROUP BY 2, 3, 4
        UNION ALL
        SELECT 'priority', time_ns / 60000000000, node, coalesce(priority::text, ''),
               count(*), max(time_ns)
          FROM detections GROUP BY 2, 3, 4
        UNION ALL
        SELECT 'outcome', det_time_ns / 60000000000, node, outcome_class,
               count(DISTINCT det_id), max(det_time_ns)
          FROM responses WHERE outcome_class IS NOT NULL GROUP BY 2, 3, 4
        UNION ALL
        SELECT 'dry-run', det_time_ns / 60000000000, node,
               coalesce(policy, '') || chr(31) || coalesce(action, ''), count(*),
               max(det_time_ns)
          FROM responses WHERE outcome_class = 'dry-run' GROUP BY 2, 3, 4
    ) c CROSS JOIN unnest(ARRAY[1, 15, 60, 1440]) AS s(span)
    GROUP BY 1, 2, 3, 4, 5
    ORDER BY 1, 2, 3;  -- a chart's counters together on disk, as the writers leave them
    GET DIAGNOSTICS made = ROW_COUNT;
    RETURN made;
END $$;
REVOKE EXECUTE ON FUNCTION enforcer_recount() FROM PUBLIC;
SELECT enforcer_recount();

CREATE OR REPLACE FUNCTION enforcer_prune() RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    keep integer;
    part record;
    dropped integer := 0;
    oldest date;
BEGIN
    SELECT value::integer INTO keep FROM enforcer_settings WHERE key = 'retention_days';
    IF keep IS NULL OR keep <= 0 THEN
        RETURN 0;
    END IF;
    oldest := (now() AT TIME ZONE 'UTC')::date - keep;
    PERFORM pg_advisory_xact_lock(hashtext('enforcer_day_partitions'));
    FOR part IN
        SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent IN ('detections'::regclass, 'responses'::regclass)
          AND c.relname ~ '_[0-9]{8}$'
          AND to_date(right(c.relname, 8), 'YYYYMMDD') < oldest
    LOOP
        EXECUTE format('DROP TABLE %I', part.relname);
        dropped := dropped + 1;
    END LOOP;
    -- Whole days go, so no minute is cut through: its counters go with it.
    DELETE FROM counts WHERE start < extract(epoch FROM oldest::timestamp)::bigint / 60;
    RETURN dropped;
END $$;
REVOKE EXECUTE ON FUNCTION enforcer_prune() FROM PUBLIC;
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "detections and responses, partitioned by day", _V1),
    Migration(2, "detections.container", _V2),
    Migration(3, "counters per node and time block", _V3),
)
LATEST = MIGRATIONS[-1].version

_LOCK = "SELECT pg_advisory_xact_lock(hashtext('enforcer_migrate'))"


def current_version(conn: Any) -> int:
    """The newest migration applied to the database (0: none)."""
    if not _scalar(conn, "SELECT to_regclass('enforcer_schema') IS NOT NULL"):
        return 0
    return int(_scalar(conn, "SELECT coalesce(max(version), 0) FROM enforcer_schema"))


def _scalar(conn: Any, sql: str) -> Any:
    """The one value of a one-row query, whatever the connection's row factory."""
    from psycopg.rows import tuple_row  # noqa: PLC0415

    with conn.cursor(row_factory=tuple_row) as cur:
        return cur.execute(sql).fetchone()[0]


def migrate(conn: Any, *, retention_days: int | None = None,
            writer_role: str | None = None, reader_role: str | None = None) -> list[int]:
    """Apply the pending migrations; returns the versions applied (in order).

    `retention_days` sets how many days of partitions `enforcer_prune()` keeps (0: all);
    `writer_role` gets what an agent needs (INSERT, UPDATE, the partition functions),
    `reader_role` what the console needs (SELECT).
    """
    from psycopg import sql  # noqa: PLC0415

    applied = []
    with conn.transaction():
        conn.execute(_LOCK)
        conn.execute("CREATE TABLE IF NOT EXISTS enforcer_schema (version integer PRIMARY KEY,"
                     " description text NOT NULL, applied_at timestamptz NOT NULL DEFAULT "
                     "now())")
    for migration in MIGRATIONS:
        with conn.transaction():
            conn.execute(_LOCK)
            if current_version(conn) >= migration.version:
                continue
            conn.execute(migration.sql)
            conn.execute("INSERT INTO enforcer_schema (version, description) VALUES (%s, %s)",
                         (migration.version, migration.description))
            applied.append(migration.version)
    with conn.transaction():
        if retention_days is not None:
            conn.execute("UPDATE enforcer_settings SET value = %s WHERE key = "
                         "'retention_days'", (str(int(retention_days)),))
        if writer_role:
            role = sql.Identifier(writer_role)
            conn.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE ON detections, responses, counts "
                                 "TO {}").format(role))
            conn.execute(sql.SQL("GRANT SELECT ON enforcer_schema, enforcer_settings TO {}")
                         .format(role))
            conn.execute(sql.SQL("GRANT EXECUTE ON FUNCTION enforcer_day_partitions(date[]), "
                                 "enforcer_prune() TO {}").format(role))
        if reader_role:
            conn.execute(sql.SQL("GRANT SELECT ON detections, responses, counts, "
                                 "enforcer_schema, enforcer_settings TO {}")
                         .format(sql.Identifier(reader_role)))
    return applied


def check(conn: Any) -> None:
    """Raise SchemaError unless the database holds exactly this enforcer's schema."""
    found = current_version(conn)
    if found == LATEST:
        return
    if found == 0:
        raise SchemaError("the database has no enforcer schema; create it with "
                          "`enforcer store migrate --store postgresql://…` (as a role that "
                          "may create tables)")
    if found < LATEST:
        raise SchemaError(f"the database's enforcer schema is version {found}, this enforcer "
                          f"needs {LATEST}; apply the migrations with `enforcer store migrate`")
    raise SchemaError(f"the database's enforcer schema is version {found}, newer than this "
                      f"enforcer's {LATEST}; upgrade the agents and console")
