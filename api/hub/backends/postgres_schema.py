"""The PostgreSQL backend's tables and functions, created by one idempotent step at start.

Why functions: a publish (dedup check, seq, history row, trim, NOTIFY), a snapshot, a
join and a reap must each be one atomic step and one round trip. A publish locks the
room's row (``FOR UPDATE``) until it commits, so seqs are assigned in commit order, and
NOTIFY is delivered at commit, in commit order, so every listener sees a room's
messages in seq order. A batch of publishes locks its rooms in item order, so two
processes' batches never deadlock.

Everything lives in one schema (``ITEMROOMS_POSTGRES_SCHEMA``), so a deployment can
share a database with the application; ``{s}`` below is that schema, quoted. Presence,
node heartbeats and the read-back payloads are UNLOGGED: they write no WAL (a join does
not wait for a disk flush), and a crash empties them, which is right, since every
process registers its members again when it finds its node gone.

The schema carries its version; a process refuses to start on a schema of another
version rather than run against tables it does not know (api/hub/backends/postgres.py).
"""

import hashlib
from typing import Any

VERSION = 1

# NOTIFY payloads must be shorter than 8,000 bytes: larger ones go as a reference to
# a row of ``payloads``, which each listener reads back.
MAX_NOTIFY_BYTES = 7999
PAYLOAD_TTL_MS = 300_000  # how long a read-back payload waits for slow listeners


def channel(schema: str, item_id: str) -> str:
    """A room's NOTIFY channel (what ``{s}.channel`` computes in SQL). Channel names stop
    at 63 bytes and item ids reach 128 characters: a digest, named by the schema so that
    several deployments can share a database."""
    return f"ir_{schema[:20]}_{hashlib.md5(item_id.encode(), usedforsecurity=False).hexdigest()}"


# Run in one transaction after ``pg_advisory_xact_lock``: processes starting together
# (``--workers 4`` on a fresh database) would otherwise race on CREATE.
SCHEMA = """
CREATE SCHEMA IF NOT EXISTS {s};

CREATE TABLE IF NOT EXISTS {s}.version (version int NOT NULL);
INSERT INTO {s}.version SELECT {version} WHERE NOT EXISTS (SELECT 1 FROM {s}.version);

CREATE TABLE IF NOT EXISTS {s}.rooms (
    item text PRIMARY KEY,
    epoch text NOT NULL,
    seq bigint NOT NULL,
    closed boolean NOT NULL DEFAULT false,
    active_ms bigint NOT NULL  -- the last publish: idle rooms are forgotten after a TTL
);

-- History: ref is kept for the sender's ack when a listener fills a gap from here.
CREATE TABLE IF NOT EXISTS {s}.messages (
    item text NOT NULL,
    seq bigint NOT NULL,
    ts bigint NOT NULL,
    user_id text NOT NULL,
    client_id text NOT NULL,
    ref text,
    pub_id text,
    data text NOT NULL,
    PRIMARY KEY (item, seq)
);

CREATE TABLE IF NOT EXISTS {s}.dedup (
    item text NOT NULL,
    user_id text NOT NULL,
    pub_id text NOT NULL,
    epoch text NOT NULL,
    seq bigint NOT NULL,
    ts bigint NOT NULL,
    client_id text NOT NULL,
    expires_ms bigint NOT NULL,
    PRIMARY KEY (item, user_id, pub_id)
);
CREATE INDEX IF NOT EXISTS dedup_expiry ON {s}.dedup (expires_ms);

CREATE TABLE IF NOT EXISTS {s}.bans (
    item text NOT NULL,
    user_id text NOT NULL,
    until_ms bigint NOT NULL,
    PRIMARY KEY (item, user_id)
);

CREATE UNLOGGED TABLE IF NOT EXISTS {s}.nodes (
    node text PRIMARY KEY,
    seen_ms bigint NOT NULL
);

CREATE UNLOGGED TABLE IF NOT EXISTS {s}.presence (
    item text NOT NULL,
    client_id text NOT NULL,
    user_id text NOT NULL,
    node text NOT NULL,
    PRIMARY KEY (item, client_id)
);
CREATE INDEX IF NOT EXISTS presence_node ON {s}.presence (node);
-- HTTP presence pages a room's users by name, bytewise as the other backends do.
CREATE INDEX IF NOT EXISTS presence_user ON {s}.presence (item, user_id COLLATE "C");

-- What a NOTIFY cannot carry (a message or binary frame over 8,000 bytes).
CREATE UNLOGGED TABLE IF NOT EXISTS {s}.payloads (
    id bigserial PRIMARY KEY,
    expires_ms bigint NOT NULL,
    body bytea NOT NULL
);

CREATE OR REPLACE FUNCTION {s}.now_ms() RETURNS bigint LANGUAGE sql AS
$$ SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint $$;

CREATE OR REPLACE FUNCTION {s}.channel(p_item text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$ SELECT 'ir_' || {channel_prefix} || '_' || md5(p_item) $$;

-- A name never used before for a room's sequence.
CREATE OR REPLACE FUNCTION {s}.new_epoch() RETURNS text LANGUAGE sql AS
$$ SELECT substr(md5(random()::text || clock_timestamp()::text), 1, 12) $$;

-- The room's row, made (in a new epoch, numbered on after p_floor) if it has none:
-- the floor is the highest seq the caller delivered, so that v1 clients resuming
-- without an epoch still see a gap where a sequence was lost.
CREATE OR REPLACE FUNCTION {s}.room(p_item text, p_floor bigint) RETURNS {s}.rooms
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE r {s}.rooms;
BEGIN
    SELECT * INTO r FROM {s}.rooms WHERE rooms.item = p_item;
    IF FOUND THEN RETURN r; END IF;
    INSERT INTO {s}.rooms VALUES (p_item, {s}.new_epoch(), p_floor, false, {s}.now_ms())
        ON CONFLICT (item) DO NOTHING;
    IF FOUND THEN  -- made here: nothing of an earlier sequence may pass for this one's
        DELETE FROM {s}.messages WHERE messages.item = p_item;
    END IF;
    SELECT * INTO r FROM {s}.rooms WHERE rooms.item = p_item;
    RETURN r;
END $$;

-- A batch of publishes, in order per room, its rooms locked in item order. A room's
-- publishes are consecutive here: its row is locked and read once, its seq counted
-- in a variable, and written back (with the history's trim) once, after its last one:
-- updating the row per publish would leave a chain of row versions that every next
-- publish of the batch walks.
-- Per publish n: kind 0, published (seq, epoch, ts); 1, its id was published already
-- (the original's seq, ts, client_id and data, if still in history); 2, the item is
-- closed (nothing written).
CREATE OR REPLACE FUNCTION {s}.publish(
    p_items text[], p_users text[], p_clients text[], p_refs text[], p_data text[],
    p_ids text[], p_floors bigint[], p_history int, p_dedup_ms bigint)
RETURNS TABLE (n int, kind int, seq bigint, epoch text, ts bigint, client_id text, data text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    r {s}.rooms;
    d {s}.dedup;
    now bigint := {s}.now_ms();
    room text;  -- the room whose row is locked in r
    taken bigint;  -- its seq as read, to know whether to write it back
    head text;
    payload text;
    body_id bigint;
BEGIN
    FOR n IN SELECT u.o FROM unnest(p_items) WITH ORDINALITY AS u(item, o) ORDER BY u.item, u.o
    LOOP
        IF room IS DISTINCT FROM p_items[n] THEN
            IF room IS NOT NULL THEN
                PERFORM {s}.publish_done(room, r.seq, taken, p_history, now);
            END IF;
            room := p_items[n];
            SELECT * INTO r FROM {s}.rooms WHERE rooms.item = room FOR UPDATE;
            IF NOT FOUND THEN
                PERFORM {s}.room(room, p_floors[n]);
                SELECT * INTO r FROM {s}.rooms WHERE rooms.item = room FOR UPDATE;
            END IF;
            taken := r.seq;
        END IF;
        IF r.closed THEN
            kind := 2; seq := 0; epoch := r.epoch; ts := 0; client_id := ''; data := NULL;
            RETURN NEXT;
            CONTINUE;
        END IF;
        IF p_ids[n] IS NOT NULL THEN
            SELECT * INTO d FROM {s}.dedup
             WHERE dedup.item = room AND dedup.user_id = p_users[n]
               AND dedup.pub_id = p_ids[n] AND dedup.expires_ms > now AND dedup.epoch = r.epoch;
            IF FOUND THEN
                kind := 1; seq := d.seq; epoch := r.epoch; ts := d.ts; client_id := d.client_id;
                data := (SELECT m.data FROM {s}.messages m WHERE m.item = room AND m.seq = d.seq);
                RETURN NEXT;
                CONTINUE;
            END IF;
        END IF;
        r.seq := r.seq + 1;
        head := json_build_array(r.seq, now, p_users[n], p_clients[n],
                                 coalesce(p_refs[n], ''), coalesce(p_ids[n], ''))::text;
        IF p_history > 0 THEN
            INSERT INTO {s}.messages VALUES
                (room, r.seq, now, p_users[n], p_clients[n], p_refs[n], p_ids[n], p_data[n]);
        END IF;
        IF p_ids[n] IS NOT NULL THEN
            INSERT INTO {s}.dedup VALUES (room, p_users[n], p_ids[n], r.epoch, r.seq,
                                          now, p_clients[n], now + p_dedup_ms)
            ON CONFLICT ON CONSTRAINT dedup_pkey DO UPDATE SET epoch = excluded.epoch,
                seq = excluded.seq, ts = excluded.ts, client_id = excluded.client_id,
                expires_ms = excluded.expires_ms;
        END IF;
        payload := 'm' || r.epoch || E'\\n' || head || E'\\n' || p_data[n];
        IF octet_length(payload) > {max_notify} THEN
            INSERT INTO {s}.payloads (expires_ms, body)
                VALUES (now + {payload_ttl}, convert_to(head || E'\\n' || p_data[n], 'UTF8'))
                RETURNING payloads.id INTO body_id;
            payload := 'r' || r.epoch || E'\\n' || r.seq || E'\\n' || body_id;
        END IF;
        PERFORM pg_notify({s}.channel(room), payload);
        kind := 0; seq := r.seq; epoch := r.epoch; ts := now; client_id := p_clients[n];
        data := NULL;
        RETURN NEXT;
    END LOOP;
    IF room IS NOT NULL THEN
        PERFORM {s}.publish_done(room, r.seq, taken, p_history, now);
    END IF;
END $$;

-- After a room's publishes in a batch: its new seq, and history trimmed to the size.
CREATE OR REPLACE FUNCTION {s}.publish_done(
    p_item text, p_seq bigint, p_taken bigint, p_history int, p_now bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF p_seq = p_taken THEN RETURN; END IF;  -- repeats or a closed room: nothing new
    UPDATE {s}.rooms SET seq = p_seq, active_ms = p_now WHERE item = p_item;
    IF p_history > 0 THEN
        DELETE FROM {s}.messages WHERE item = p_item AND seq <= p_seq - p_history;
    END IF;
END $$;

-- A binary frame over NOTIFY's limit: stored for the listeners to read back.
CREATE OR REPLACE FUNCTION {s}.relay(p_item text, p_head text, p_body bytea) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE body_id bigint;
BEGIN
    INSERT INTO {s}.payloads (expires_ms, body) VALUES ({s}.now_ms() + {payload_ttl}, p_body)
        RETURNING payloads.id INTO body_id;
    PERFORM pg_notify({s}.channel(p_item), 'B' || p_head || E'\\n' || body_id);
END $$;

-- A room for a joining member, in one round trip. Rows: kind 0, the room (seq, epoch,
-- and ts 1 when the replay is whole, 0 when not); kind 2, a message after p_since (none
-- when p_since < 0). Members are not read here: a join in a room of thousands would
-- read them all (the hub keeps each room's presence from its subscription).
CREATE OR REPLACE FUNCTION {s}.snapshot(
    p_item text, p_since bigint, p_epoch text, p_limit int)
RETURNS TABLE (kind int, seq bigint, ts bigint, user_id text, client_id text, epoch text,
               pub_id text, data text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    r {s}.rooms := {s}.room(p_item, 0);
    since bigint := p_since;
    recovered int := 1;
    first bigint;
BEGIN
    IF since >= 0 AND (since > r.seq OR (p_epoch IS NOT NULL AND p_epoch <> r.epoch)) THEN
        since := 0;  -- a sequence the client never saw: everything, not recovered
        recovered := 0;
    END IF;
    IF recovered = 1 AND since >= 0 AND since < r.seq THEN
        SELECT min(m.seq) INTO first FROM {s}.messages m
         WHERE m.item = p_item AND m.seq > since AND m.seq <= r.seq;
        IF first IS NULL OR first <> since + 1 THEN recovered := 0; END IF;
    END IF;
    RETURN QUERY SELECT 0, r.seq, recovered::bigint, NULL::text, NULL::text, r.epoch,
                        NULL::text, NULL::text;
    IF since >= 0 AND since < r.seq AND p_limit > 0 THEN
        RETURN QUERY SELECT 2, m.seq, m.ts, m.user_id, m.client_id, NULL::text, m.pub_id, m.data
                       FROM {s}.messages m
                      WHERE m.item = p_item AND m.seq > since AND m.seq <= r.seq
                      ORDER BY m.seq LIMIT p_limit;
    END IF;
END $$;

-- A page of history, or a single row with seq -1 when the room is no longer in p_epoch.
CREATE OR REPLACE FUNCTION {s}.history(
    p_item text, p_epoch text, p_after bigint, p_upto bigint, p_limit int)
RETURNS SETOF {s}.messages LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM {s}.rooms r WHERE r.item = p_item AND r.epoch = p_epoch) THEN
        RETURN QUERY SELECT p_item, -1::bigint, 0::bigint, '', '', NULL::text, NULL::text, '';
        RETURN;
    END IF;
    RETURN QUERY SELECT * FROM {s}.messages m
                  WHERE m.item = p_item AND m.seq > p_after AND m.seq <= p_upto
                  ORDER BY m.seq LIMIT p_limit;
END $$;

-- After the listening connection was away: the room's epoch and seq. A room that is
-- gone (a database restored from an older backup, or emptied), or whose seq is below
-- what the caller delivered in its epoch (a failover to a replica that missed the last
-- commits), starts a new epoch numbered on after p_floor.
CREATE OR REPLACE FUNCTION {s}.resync(p_item text, p_epoch text, p_floor bigint)
RETURNS TABLE (epoch text, seq bigint) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE r {s}.rooms := {s}.room(p_item, p_floor);
BEGIN
    IF r.epoch = p_epoch AND r.seq < p_floor THEN
        SELECT * INTO r FROM {s}.rooms WHERE rooms.item = p_item FOR UPDATE;
        IF r.epoch = p_epoch AND r.seq < p_floor THEN
            DELETE FROM {s}.messages WHERE messages.item = p_item;
            UPDATE {s}.rooms SET epoch = {s}.new_epoch(), seq = p_floor
             WHERE rooms.item = p_item RETURNING * INTO r;
        END IF;
    END IF;
    RETURN QUERY SELECT r.epoch, r.seq;
END $$;

-- A heartbeat; true when the node was not registered: reaped after its heartbeat
-- lapsed, or the database lost its unlogged tables. Its members must be registered again.
CREATE OR REPLACE FUNCTION {s}.heartbeat(p_node text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE {s}.nodes SET seen_ms = {s}.now_ms() WHERE node = p_node;
    IF FOUND THEN RETURN false; END IF;
    INSERT INTO {s}.nodes VALUES (p_node, {s}.now_ms())
        ON CONFLICT (node) DO UPDATE SET seen_ms = excluded.seen_ms;
    RETURN true;
END $$;

-- Register members of p_node, announcing those that were not registered. False (and
-- nothing written) when the node itself is not registered: its heartbeat registers it,
-- then all its members. KEY SHARE holds off a reaper until this commits, so a reaper
-- either sees these rows or this sees the node gone.
CREATE OR REPLACE FUNCTION {s}.join(
    p_items text[], p_clients text[], p_users text[], p_node text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM {s}.nodes WHERE node = p_node FOR KEY SHARE;
    IF NOT FOUND THEN RETURN false; END IF;
    FOR i IN 1 .. coalesce(array_length(p_items, 1), 0) LOOP
        INSERT INTO {s}.presence VALUES (p_items[i], p_clients[i], p_users[i], p_node)
            ON CONFLICT (item, client_id) DO NOTHING;
        IF FOUND THEN
            PERFORM pg_notify({s}.channel(p_items[i]),
                              'p' || json_build_array('join', p_users[i], p_clients[i])::text);
        END IF;
    END LOOP;
    RETURN true;
END $$;

-- Remove members, announcing those that were registered.
CREATE OR REPLACE FUNCTION {s}.leave(p_items text[], p_clients text[]) RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    gone text;
    gone_n int := 0;
BEGIN
    FOR i IN 1 .. coalesce(array_length(p_items, 1), 0) LOOP
        DELETE FROM {s}.presence WHERE item = p_items[i] AND client_id = p_clients[i]
            RETURNING user_id INTO gone;
        IF FOUND THEN
            PERFORM pg_notify({s}.channel(p_items[i]),
                              'p' || json_build_array('leave', gone, p_clients[i])::text);
            gone_n := gone_n + 1;
        END IF;
    END LOOP;
    RETURN gone_n;
END $$;

-- A node and every member it registered, with a leave each.
CREATE OR REPLACE FUNCTION {s}.drop_node(p_node text) RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    gone record;
    gone_n int := 0;
BEGIN
    DELETE FROM {s}.nodes WHERE node = p_node;
    FOR gone IN DELETE FROM {s}.presence WHERE node = p_node
                RETURNING item, user_id, client_id LOOP
        PERFORM pg_notify({s}.channel(gone.item),
                          'p' || json_build_array('leave', gone.user_id, gone.client_id)::text);
        gone_n := gone_n + 1;
    END LOOP;
    RETURN gone_n;
END $$;

-- The members of nodes whose heartbeat is older than the TTL, removed with a leave each:
-- once, however many processes notice (a node row locked by another reaper, or by a
-- join under way, is skipped until the next time).
CREATE OR REPLACE FUNCTION {s}.reap(p_self text, p_ttl_ms bigint) RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    dead text;
    gone_n int := 0;
BEGIN
    FOR dead IN SELECT node FROM {s}.nodes
                 WHERE seen_ms < {s}.now_ms() - p_ttl_ms AND node <> p_self
                   FOR UPDATE SKIP LOCKED LOOP
        gone_n := gone_n + {s}.drop_node(dead);
    END LOOP;
    RETURN gone_n;
END $$;

-- What expires: publish ids past the dedup window, bans served, read-back payloads,
-- and rooms without a publish for the history TTL and without members (with their
-- history and seq; a closed room keeps its mark). One process at a time: -1 when
-- another is at it.
CREATE OR REPLACE FUNCTION {s}.upkeep(p_idle_ms bigint) RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    now bigint := {s}.now_ms();
    forgotten int;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('itemrooms upkeep ' || {schema_literal})) THEN
        RETURN -1;
    END IF;
    DELETE FROM {s}.dedup WHERE expires_ms < now;
    DELETE FROM {s}.bans WHERE until_ms < now;
    DELETE FROM {s}.payloads WHERE expires_ms < now;
    WITH idle AS (
        DELETE FROM {s}.rooms r
         WHERE r.active_ms < now - p_idle_ms AND NOT r.closed
           AND NOT EXISTS (SELECT 1 FROM {s}.presence p WHERE p.item = r.item)
        RETURNING r.item
    ), dropped AS (
        DELETE FROM {s}.messages m USING idle WHERE m.item = idle.item
    )
    SELECT count(*) INTO forgotten FROM idle;
    RETURN forgotten;
END $$;
"""


async def version_problem(conn: Any, schema: str) -> str | None:
    """Why the tables in ``schema`` are not ours to use (another itemrooms version made
    them); None when they are, or when there are none yet."""
    quoted = '"' + schema.replace('"', '""') + '"'
    rooms, version = await conn.fetchrow(
        "SELECT to_regclass($1) IS NOT NULL, to_regclass($2) IS NOT NULL",
        f"{quoted}.rooms",
        f"{quoted}.version",
    )
    found = await conn.fetchval(f"SELECT max(version) FROM {quoted}.version") if version else None
    if not rooms or found == VERSION:
        return None
    return (
        f"schema {schema!r} holds tables of another itemrooms version "
        f"({found or 'one before versions'}; this one needs {VERSION}): use another "
        f"ITEMROOMS_POSTGRES_SCHEMA, or drop it (DROP SCHEMA {quoted} CASCADE)"
    )


def schema_sql(schema: str) -> str:
    """The creation step for ``schema`` (already checked to be a plain identifier)."""
    quoted = '"' + schema.replace('"', '""') + '"'
    literal = "'" + schema.replace("'", "''") + "'"
    return SCHEMA.format(
        s=quoted,
        version=VERSION,
        channel_prefix="'" + schema[:20].replace("'", "''") + "'",
        schema_literal=literal,
        max_notify=MAX_NOTIFY_BYTES,
        payload_ttl=PAYLOAD_TTL_MS,
    )
