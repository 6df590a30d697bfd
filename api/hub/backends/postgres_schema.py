"""The PostgreSQL backend's tables and functions, created by one idempotent step at start.

Why functions: a publish (dedup check, seq, history row, trim, NOTIFY) and a snapshot
must each be one atomic step and one round trip. The room's row is locked
(``FOR UPDATE``) for the length of a publish, so seqs are assigned in commit order, and
NOTIFY is delivered at commit, so every listener sees a room's messages in seq order.

Everything lives in one schema (``ITEMROOMS_POSTGRES_SCHEMA``), so a deployment can
share a database with the application; ``{s}`` below is that schema, quoted.
"""

# NOTIFY payloads stop at 8,000 bytes: a larger message goes out as a reference to
# its history row (m + item + seq), which each listener reads back.
MAX_NOTIFY_BYTES = 7900

SCHEMA = """
CREATE SCHEMA IF NOT EXISTS {s};

CREATE TABLE IF NOT EXISTS {s}.rooms (
    item text PRIMARY KEY,
    epoch text NOT NULL,
    seq bigint NOT NULL DEFAULT 0,
    closed boolean NOT NULL DEFAULT false
);

CREATE TABLE IF NOT EXISTS {s}.messages (
    item text NOT NULL,
    seq bigint NOT NULL,
    ts bigint NOT NULL,
    user_id text NOT NULL,
    client_id text NOT NULL,
    data text NOT NULL,
    pub_id text,
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

CREATE TABLE IF NOT EXISTS {s}.presence (
    item text NOT NULL,
    client_id text NOT NULL,
    user_id text NOT NULL,
    node text NOT NULL,
    PRIMARY KEY (item, client_id)
);

CREATE TABLE IF NOT EXISTS {s}.nodes (
    node text PRIMARY KEY,
    seen_ms bigint NOT NULL
);

CREATE TABLE IF NOT EXISTS {s}.bans (
    item text NOT NULL,
    user_id text NOT NULL,
    until_ms bigint NOT NULL,
    PRIMARY KEY (item, user_id)
);

CREATE OR REPLACE FUNCTION {s}.now_ms() RETURNS bigint LANGUAGE sql AS
$$ SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint $$;

-- A new room's epoch, made here so that a publish sends none (it is rarely needed).
CREATE OR REPLACE FUNCTION {s}.new_epoch() RETURNS text LANGUAGE sql AS
$$ SELECT substr(md5(random()::text || clock_timestamp()::text), 1, 8) || '-0' $$;

-- The room's row, created with a new epoch the first time: its epoch and seq.
CREATE OR REPLACE FUNCTION {s}.room(p_item text)
RETURNS {s}.rooms LANGUAGE plpgsql AS $$
DECLARE r {s}.rooms;
BEGIN
    INSERT INTO {s}.rooms (item, epoch) VALUES (p_item, {s}.new_epoch())
        ON CONFLICT (item) DO NOTHING;
    SELECT * INTO r FROM {s}.rooms WHERE item = p_item;
    RETURN r;
END $$;

-- kind 0: published (seq, epoch, ts); 1: a repeated id (the original's seq, ts,
-- client_id and data, if still in history); 2: the item is closed (nothing written).
CREATE OR REPLACE FUNCTION {s}.publish(
    p_item text, p_user text, p_client text, p_ref text, p_data text, p_id text,
    p_history int, p_dedup_ms bigint, p_channel text)
RETURNS TABLE (kind int, seq bigint, epoch text, ts bigint, client_id text, data text)
LANGUAGE plpgsql AS $$
DECLARE
    r {s}.rooms;
    d {s}.dedup;
    now bigint := {s}.now_ms();
    head text;
BEGIN
    INSERT INTO {s}.rooms (item, epoch) VALUES (p_item, {s}.new_epoch())
        ON CONFLICT (item) DO NOTHING;
    SELECT * INTO r FROM {s}.rooms WHERE rooms.item = p_item FOR UPDATE;
    IF r.closed THEN
        RETURN QUERY SELECT 2, 0::bigint, r.epoch, 0::bigint, ''::text, NULL::text;
        RETURN;
    END IF;
    IF p_id IS NOT NULL THEN
        SELECT * INTO d FROM {s}.dedup
         WHERE dedup.item = p_item AND dedup.user_id = p_user AND dedup.pub_id = p_id
           AND dedup.expires_ms > now AND dedup.epoch = r.epoch;
        IF FOUND THEN
            RETURN QUERY SELECT 1, d.seq, r.epoch, d.ts, d.client_id,
                (SELECT m.data FROM {s}.messages m WHERE m.item = p_item AND m.seq = d.seq);
            RETURN;
        END IF;
    END IF;
    UPDATE {s}.rooms SET seq = rooms.seq + 1 WHERE rooms.item = p_item
        RETURNING rooms.seq INTO r.seq;
    head := json_build_array(
        r.seq, now, p_user, p_client, coalesce(p_ref, ''), coalesce(p_id, ''))::text;
    IF p_history > 0 OR octet_length(p_data) > {max_notify} THEN
        INSERT INTO {s}.messages VALUES (p_item, r.seq, now, p_user, p_client, p_data, p_id);
        DELETE FROM {s}.messages
         WHERE messages.item = p_item AND messages.seq <= r.seq - greatest(p_history, 1);
    END IF;
    IF p_id IS NOT NULL THEN
        INSERT INTO {s}.dedup
            VALUES (p_item, p_user, p_id, r.epoch, r.seq, now, p_client, now + p_dedup_ms)
        ON CONFLICT ON CONSTRAINT dedup_pkey DO UPDATE SET epoch = excluded.epoch,
            seq = excluded.seq, ts = excluded.ts, client_id = excluded.client_id,
            expires_ms = excluded.expires_ms;
    END IF;
    IF octet_length(p_data) > {max_notify} THEN
        PERFORM pg_notify(p_channel, 'r' || r.epoch || E'\\n' || head);
    ELSE
        PERFORM pg_notify(p_channel, 'm' || r.epoch || E'\\n' || head || E'\\n' || p_data);
    END IF;
    RETURN QUERY SELECT 0, r.seq, r.epoch, now, p_client, NULL::text;
END $$;
"""
