"""The relay: events from PostgreSQL to every socket of their user.

One event's trip, in the order of the modules:

1. `listener`: the process's one LISTEN connection receives a `pg_notify`
   payload (and probes, reconnects and back-fills when it is lost);
2. `events`: the payload is parsed (its grammar is in sql/triggers.sql);
3. `hub`: the switchboard finds the user's sockets on this process;
4. `rendering`: a batch of events becomes each user's deliveries (content
   read from the tables once);
5. `frames`, `frame_shapes`: the JSON frames of both protocols, and their types;
6. `peers`: each socket's bounded send queue and what it was shown;
7. `session`, `websocket`: one socket's reader and writer, and the endpoint
   that opens it (`protocol`: the path, subprotocol and close codes).
"""
