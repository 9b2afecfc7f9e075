-- mulchat's initial schema on SQLite: DESIGN.md's data model (post-migration
-- layout). Timestamps are TEXT in UTC, "YYYY-MM-DD HH:MM:SS.ffffff" (see
-- docs/storage.md); booleans are INTEGER 0/1. AUTOINCREMENT keeps ids from
-- being reused after a delete, because ids appear in NATS subjects.

-- +goose Up
CREATE TABLE nats_operators (
    id             INTEGER PRIMARY KEY CONSTRAINT nats_operators_one_check CHECK (id = 1),
    name           TEXT NOT NULL,
    public_key     TEXT NOT NULL,
    jwt            TEXT NOT NULL,
    seed_encrypted BLOB,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);

CREATE TABLE nats_accounts (
    id                    INTEGER PRIMARY KEY AUTOINCREMENT,
    name                  TEXT NOT NULL CONSTRAINT nats_accounts_name_key UNIQUE,
    public_key            TEXT NOT NULL CONSTRAINT nats_accounts_public_key_key UNIQUE,
    description           TEXT,
    created_at            TEXT NOT NULL,
    updated_at            TEXT NOT NULL,
    jwt                   TEXT,
    seed_encrypted        BLOB,
    signing_public_key    TEXT,
    signing_key_encrypted BLOB
);

CREATE TABLE users (
    id                      INTEGER PRIMARY KEY AUTOINCREMENT,
    username                TEXT NOT NULL CONSTRAINT users_username_key UNIQUE,
    email                   TEXT CONSTRAINT users_email_key UNIQUE,
    hashed_password         TEXT NOT NULL,
    is_active               INTEGER NOT NULL DEFAULT 1,
    must_rotate_password    INTEGER NOT NULL DEFAULT 0,
    created_at              TEXT NOT NULL,
    nats_jwt                TEXT,
    nats_seed_hash          TEXT,
    nats_public_key         TEXT CONSTRAINT users_nats_public_key_key UNIQUE,
    nats_account_id         INTEGER REFERENCES nats_accounts (id),
    nats_account_public_key TEXT,
    nats_expires_at         TEXT,
    nats_expired_at         TEXT
);
CREATE INDEX users_nats_account_id_idx ON users (nats_account_id);

CREATE TABLE nats_rooms (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    name           TEXT NOT NULL CONSTRAINT nats_rooms_name_key UNIQUE,
    subject_prefix TEXT NOT NULL DEFAULT '',
    description    TEXT,
    account_id     INTEGER REFERENCES nats_accounts (id),
    is_public      INTEGER NOT NULL DEFAULT 1,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);

CREATE TABLE nats_user_rooms (
    user_id   INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    room_id   INTEGER NOT NULL REFERENCES nats_rooms (id) ON DELETE CASCADE,
    joined_at TEXT NOT NULL,
    role      TEXT NOT NULL DEFAULT 'member'
              CONSTRAINT nats_user_rooms_role_check CHECK (role IN ('owner', 'member', 'reader')),
    CONSTRAINT nats_user_rooms_pkey PRIMARY KEY (user_id, room_id)
);
CREATE INDEX nats_user_rooms_room_id_idx ON nats_user_rooms (room_id);

CREATE TABLE nats_permissions (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id         INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    room_id         INTEGER REFERENCES nats_rooms (id) ON DELETE CASCADE,
    permission_type TEXT NOT NULL
                    CONSTRAINT nats_permissions_permission_type_check CHECK (permission_type IN ('pub', 'sub', 'both')),
    subject         TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE INDEX nats_permissions_user_id_idx ON nats_permissions (user_id);

CREATE TABLE nats_auth_sessions (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id       INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id     TEXT,
    ip_address    TEXT,
    user_agent    TEXT,
    created_at    TEXT NOT NULL,
    last_activity TEXT NOT NULL,
    expires_at    TEXT,
    active        INTEGER NOT NULL DEFAULT 1,
    public_key    TEXT,
    server_id     TEXT,
    cid           INTEGER,
    closed_at     TEXT,
    close_reason  TEXT
);
CREATE INDEX nats_auth_sessions_user_id_idx ON nats_auth_sessions (user_id);
CREATE INDEX nats_auth_sessions_server_cid_idx ON nats_auth_sessions (server_id, cid) WHERE active;

CREATE TABLE api_tokens (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash TEXT NOT NULL CONSTRAINT api_tokens_token_hash_key UNIQUE,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    revoked_at TEXT,
    user_agent TEXT,
    ip_address TEXT
);
CREATE INDEX api_tokens_user_id_idx ON api_tokens (user_id);
CREATE INDEX api_tokens_expires_at_idx ON api_tokens (expires_at);

-- +goose Down
DROP TABLE api_tokens;
DROP TABLE nats_auth_sessions;
DROP TABLE nats_permissions;
DROP TABLE nats_user_rooms;
DROP TABLE nats_rooms;
DROP TABLE users;
DROP TABLE nats_accounts;
DROP TABLE nats_operators;
