"""The database side: where PostgreSQL is and how the app talks to it.

- `connection`: which database (embedded or CITELINK_DATABASE_URL), the pool,
  transactions with an audit actor, and the errors that mean "unavailable";
- `decoding`: any value PostgreSQL holds, as Python the app can send;
- `embedded`: the bundled PostgreSQL server;
- `migrations`: yoyo's migrations, then sql/triggers.sql;
- `queries`: every statement the app runs, by name (`queries/*.sql`);
- `inbox_store`: a user's inbox, read and changed for REST and sockets alike;
- `scheduler`, `pruning`: the background work every process runs.

The behaviour itself (fan-out, counters, audit, events) lives in the top-level
`sql/` folder, in triggers.
"""
