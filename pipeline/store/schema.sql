-- The store's tables. Every write is idempotent: replaying a topic changes nothing.
CREATE TABLE IF NOT EXISTS events (
    event_id        VARCHAR PRIMARY KEY,
    shipment_id     VARCHAR NOT NULL,
    event_type      VARCHAR NOT NULL,
    event_time      TIMESTAMPTZ NOT NULL,
    log_id          VARCHAR NOT NULL,
    leaf_index      BIGINT NOT NULL,
    leaf_hash       VARCHAR NOT NULL,
    kafka_partition INTEGER NOT NULL,
    kafka_offset    BIGINT NOT NULL,
    -- zstd: half the checkpoint CPU of DuckDB's default string compression (dict+FSST)
    -- on these JSON documents, and a smaller file; point lookups and scans cost the same.
    payload         JSON USING COMPRESSION zstd NOT NULL,
    recorded_at     TIMESTAMPTZ NOT NULL
);
-- A leaf whose event_id was already recorded (a producer sent the same id twice):
-- the log keeps every accepted record, so the leaf is kept here.
CREATE TABLE IF NOT EXISTS duplicate_leaves (
    log_id          VARCHAR NOT NULL,
    leaf_index      BIGINT NOT NULL,
    event_id        VARCHAR NOT NULL,
    leaf_hash       VARCHAR NOT NULL,
    kafka_offset    BIGINT NOT NULL,
    payload         JSON NOT NULL,
    recorded_at     TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (log_id, leaf_index)
);
CREATE TABLE IF NOT EXISTS blocks (
    log_id           VARCHAR NOT NULL,
    height           BIGINT NOT NULL,
    prev_block_hash  VARCHAR NOT NULL,
    tree_size        BIGINT NOT NULL,
    root             VARCHAR NOT NULL,
    first_offset     BIGINT NOT NULL,
    last_offset      BIGINT NOT NULL,
    first_event_time VARCHAR NOT NULL,
    last_event_time  VARCHAR NOT NULL,
    created_at       VARCHAR NOT NULL,
    block_hash       VARCHAR NOT NULL,
    PRIMARY KEY (log_id, height)
);
-- A second, different block at a height already recorded: evidence of a fork.
CREATE TABLE IF NOT EXISTS block_conflicts (
    log_id      VARCHAR NOT NULL,
    height      BIGINT NOT NULL,
    block_hash  VARCHAR NOT NULL,
    header      JSON NOT NULL,
    seen_at     TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (log_id, height, block_hash)
);
CREATE TABLE IF NOT EXISTS dead_letters (
    source_topic     VARCHAR NOT NULL,
    source_partition INTEGER NOT NULL,
    source_offset    BIGINT NOT NULL,
    kafka_key        BLOB,
    value            BLOB NOT NULL,
    value_text       VARCHAR,
    error            VARCHAR NOT NULL,
    error_fields     JSON,
    received_at      TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (source_topic, source_partition, source_offset)
);
CREATE TABLE IF NOT EXISTS checkpoints (
    sequence    BIGINT PRIMARY KEY,
    origin      VARCHAR NOT NULL,
    key_id      VARCHAR NOT NULL,
    note        VARCHAR NOT NULL,
    logs        JSON NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);
-- One row per log named by a checkpoint: finds the checkpoint covering a block quickly.
CREATE TABLE IF NOT EXISTS checkpoint_logs (
    sequence    BIGINT NOT NULL,
    log_id      VARCHAR NOT NULL,
    height      BIGINT NOT NULL,
    tree_size   BIGINT NOT NULL,
    block_hash  VARCHAR NOT NULL,
    PRIMARY KEY (log_id, sequence)
);
-- Witness cosignatures of checkpoints: signature lines added to the checkpoint note.
CREATE TABLE IF NOT EXISTS cosignatures (
    sequence    BIGINT NOT NULL,
    witness     VARCHAR NOT NULL,
    key_id      VARCHAR NOT NULL,
    line        VARCHAR NOT NULL,
    received_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (sequence, witness, key_id)
);
CREATE TABLE IF NOT EXISTS merkle_tiles (
    log_id  VARCHAR NOT NULL,
    level   INTEGER NOT NULL,
    idx     BIGINT NOT NULL,
    hashes  BLOB NOT NULL,
    PRIMARY KEY (log_id, level, idx)
);
CREATE TABLE IF NOT EXISTS consumer_offsets (
    topic       VARCHAR NOT NULL,
    partition   INTEGER NOT NULL,
    next_offset BIGINT NOT NULL,
    PRIMARY KEY (topic, partition)
);

-- Each Kafka cluster the store read from (its cluster id), in order: a new one means the broker
-- lost its data (an in-memory broker restarted), so the offsets above no longer point anywhere.
CREATE TABLE IF NOT EXISTS broker_clusters (
    cluster_id  VARCHAR PRIMARY KEY,
    seen_at     TIMESTAMPTZ NOT NULL,
    offsets_dropped JSON NOT NULL  -- the consumer offsets the store had then: what it read of the old one
);
-- Daily demand per series (sku=<sku>|site=<origin>, sku=<sku>, total) by the event's local day.
-- Each ledger.entries partition's analytics state sends its own part of a day's total; parts
-- only grow, so a replayed or stale part never lowers one, and `demand` is the sum of the parts.
CREATE TABLE IF NOT EXISTS demand_parts (
    series_key  VARCHAR NOT NULL,
    ds          DATE NOT NULL,
    part        INTEGER NOT NULL,
    y           DOUBLE NOT NULL,
    PRIMARY KEY (series_key, ds, part)
);
CREATE TABLE IF NOT EXISTS demand (
    series_key  VARCHAR NOT NULL,
    ds          DATE NOT NULL,
    y           DOUBLE NOT NULL,
    PRIMARY KEY (series_key, ds)
);
-- Forecasts, history kept by trained_at; model is JSON text naming the ensemble, its members and weights
-- (model->>'name' is the name);
-- input_ledger is, per log, the tree size of the ledger the fit read.
CREATE TABLE IF NOT EXISTS forecasts (
    series_key     VARCHAR NOT NULL,
    ds             DATE NOT NULL,
    yhat           DOUBLE NOT NULL,
    yhat_lower     DOUBLE NOT NULL,
    yhat_upper     DOUBLE NOT NULL,
    yhat_lower_95  DOUBLE NOT NULL,
    yhat_upper_95  DOUBLE NOT NULL,
    trained_at     TIMESTAMPTZ NOT NULL,
    model          VARCHAR NOT NULL,
    input_ledger   JSON NOT NULL,
    PRIMARY KEY (series_key, trained_at, ds, model)
);
-- Live accuracy: every stored forecast day whose actual is in, with its error and interval hits.
CREATE OR REPLACE VIEW forecast_scores AS
SELECT f.series_key, f.ds, f.trained_at, (f.ds - CAST(f.trained_at AS DATE)) AS lead_days,
       f.yhat, d.y, d.y - f.yhat AS error,
       d.y BETWEEN f.yhat_lower AND f.yhat_upper AS in_80,
       d.y BETWEEN f.yhat_lower_95 AND f.yhat_upper_95 AS in_95
FROM forecasts f JOIN demand d USING (series_key, ds);
CREATE OR REPLACE VIEW forecast_coverage AS
SELECT CASE WHEN series_key = 'total' THEN 'total' WHEN series_key LIKE '%|site=%' THEN 'sku_site' ELSE 'sku' END
           AS level,
       count(*) AS scored, avg(CAST(in_80 AS DOUBLE)) AS coverage_80, avg(CAST(in_95 AS DOUBLE)) AS coverage_95,
       avg(abs(error)) AS mae
FROM forecast_scores GROUP BY 1;
-- Delay anomalies from analytics.anomalies: one row per (shipment, kind), the highest revision kept.
CREATE TABLE IF NOT EXISTS anomalies (
    anomaly_id   VARCHAR PRIMARY KEY,
    event_id     VARCHAR NOT NULL,
    shipment_id  VARCHAR NOT NULL,
    lane         VARCHAR NOT NULL,
    kind         VARCHAR NOT NULL,
    severity     VARCHAR NOT NULL,
    status       VARCHAR NOT NULL,
    score        DOUBLE,
    expected     DOUBLE,
    actual       DOUBLE,
    observed_at  TIMESTAMPTZ NOT NULL,
    detected_at  TIMESTAMPTZ NOT NULL,
    explanation  VARCHAR NOT NULL,
    evidence     JSON,
    model        VARCHAR NOT NULL,
    log_id       VARCHAR NOT NULL,
    leaf_index   BIGINT NOT NULL,
    revision     BIGINT NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL
);
-- EPCIS 2.0 events, as sent (`original` is the JSON whose RFC 8785 form is the leaf), one row per
-- recorded event; an errorDeclaration shares its original's event_id (declaration = true).
CREATE TABLE IF NOT EXISTS epcis_events (
    event_id        VARCHAR NOT NULL,  -- the producer's eventID, else the CBV 2.0 event hash
    epcis_type      VARCHAR NOT NULL,
    event_hash      VARCHAR NOT NULL,  -- CBV 2.0 canonical event hash (ni:///sha-256;...?ver=CBV2.0)
    id_source       VARCHAR NOT NULL,  -- 'eventID' or 'hash'
    event_time      TIMESTAMPTZ NOT NULL,
    biz_step        VARCHAR,
    declaration     BOOLEAN NOT NULL,
    log_id          VARCHAR NOT NULL,
    leaf_index      BIGINT NOT NULL,
    leaf_hash       VARCHAR NOT NULL,
    kafka_partition INTEGER NOT NULL,
    kafka_offset    BIGINT NOT NULL,
    original        JSON NOT NULL,
    context         JSON,
    view            JSON,              -- the derived ShipmentEvent view, or null
    recorded_at     TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (log_id, leaf_index)
);
-- Corrections: a declaration (declared_by = its event_id) and the corrective events it names.
CREATE TABLE IF NOT EXISTS epcis_links (
    declared_by  VARCHAR NOT NULL,
    target_id    VARCHAR NOT NULL,
    relation     VARCHAR NOT NULL,  -- 'errorDeclaration' or 'correctiveEventID'
    log_id       VARCHAR NOT NULL,
    leaf_index   BIGINT NOT NULL,
    PRIMARY KEY (log_id, leaf_index, target_id, relation)
);
-- Derived ShipmentEvent views of EPCIS events, in the columns of `events`.
CREATE OR REPLACE VIEW epcis_shipment_events AS
    SELECT event_id, view->>'shipment_id' AS shipment_id, view->>'event_type' AS event_type, event_time,
           log_id, leaf_index, leaf_hash, kafka_partition, kafka_offset, view AS payload, recorded_at
    FROM epcis_events WHERE view IS NOT NULL AND NOT declaration;
