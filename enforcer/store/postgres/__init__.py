"""The cluster-wide audit store in PostgreSQL: every agent writes its detections, decisions
and action outcomes there, tagged with its node, and `enforcer ui --store postgresql://…`
shows them all. psycopg is imported only when such a store is configured."""
