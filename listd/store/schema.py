"""The database schema, as forward migrations."""

from __future__ import annotations

# Forward migrations: index i brings the schema from version i to i + 1. Never edit one
# that has shipped; append a new one.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE members (
            list_id TEXT NOT NULL,
            address_key TEXT NOT NULL,
            address TEXT NOT NULL,
            display_name TEXT NOT NULL DEFAULT '',
            status TEXT NOT NULL
                CHECK (status IN ('active', 'pending', 'disabled', 'unsubscribed')),
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            PRIMARY KEY (list_id, address_key)
        ) WITHOUT ROWID""",
        "CREATE INDEX members_by_address ON members (address_key)",
        """CREATE TABLE checkpoint (
            folder TEXT PRIMARY KEY,
            uidvalidity INTEGER NOT NULL,
            last_uid INTEGER NOT NULL,
            updated_at REAL NOT NULL
        )""",
        """CREATE TABLE inbound (
            id INTEGER PRIMARY KEY,
            folder TEXT NOT NULL,
            uidvalidity INTEGER NOT NULL,
            uid INTEGER NOT NULL,
            message_id TEXT,
            date_header TEXT,
            sha256 TEXT NOT NULL,
            raw BLOB NOT NULL,
            received_at REAL NOT NULL,
            state TEXT NOT NULL DEFAULT 'new' CHECK (state IN ('new', 'done')),
            decision TEXT,
            reason TEXT,
            processed_at REAL,
            UNIQUE (folder, uidvalidity, uid)
        )""",
        "CREATE INDEX inbound_by_message_id ON inbound (message_id, date_header)",
        "CREATE INDEX inbound_by_sha256 ON inbound (sha256)",
        "CREATE INDEX inbound_new ON inbound (id) WHERE state = 'new'",
        """CREATE TABLE outgoing (
            id INTEGER PRIMARY KEY,
            inbound_id INTEGER REFERENCES inbound (id),
            list_id TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('post', 'notice', 'forward')),
            envelope_from TEXT NOT NULL,
            data BLOB NOT NULL,
            created_at REAL NOT NULL
        )""",
        """CREATE TABLE deliveries (
            outgoing_id INTEGER NOT NULL REFERENCES outgoing (id),
            recipient TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'failed')),
            attempts INTEGER NOT NULL DEFAULT 0,
            last_code INTEGER,
            last_text TEXT,
            next_attempt_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            PRIMARY KEY (outgoing_id, recipient)
        ) WITHOUT ROWID""",
        "CREATE INDEX deliveries_due ON deliveries (next_attempt_at, outgoing_id) "
        "WHERE state = 'pending'",
        "CREATE TABLE notice_log (key TEXT PRIMARY KEY, sent_at REAL NOT NULL) WITHOUT ROWID",
        "CREATE TABLE status (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
    ),
    (
        "ALTER TABLE members ADD COLUMN unsubscribe_generation INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE outgoing ADD COLUMN personalize INTEGER NOT NULL DEFAULT 0",
        """CREATE TABLE tokens (
            hash TEXT PRIMARY KEY,
            list_id TEXT NOT NULL,
            address TEXT NOT NULL,
            action TEXT NOT NULL CHECK (action IN
                ('subscribe', 'unsubscribe', 'approve-subscription', 'held-post')),
            ref INTEGER,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            used_at REAL
        ) WITHOUT ROWID""",
        "CREATE INDEX tokens_open ON tokens (list_id, action) WHERE used_at IS NULL",
        """CREATE TABLE membership_log (
            id INTEGER PRIMARY KEY,
            list_id TEXT NOT NULL,
            address TEXT NOT NULL,
            old_status TEXT,
            new_status TEXT NOT NULL,
            actor TEXT NOT NULL,
            via TEXT NOT NULL,
            inbound_id INTEGER,
            reason TEXT NOT NULL DEFAULT '',
            at REAL NOT NULL
        )""",
        "CREATE INDEX membership_log_by_member ON membership_log (list_id, address)",
        """CREATE TABLE bounces (
            id INTEGER PRIMARY KEY,
            list_id TEXT NOT NULL,
            address_key TEXT NOT NULL,
            permanent INTEGER NOT NULL,
            inbound_id INTEGER,
            at REAL NOT NULL
        )""",
        "CREATE INDEX bounces_by_member ON bounces (list_id, address_key, at)",
        """CREATE TABLE held (
            id INTEGER PRIMARY KEY,
            inbound_id INTEGER NOT NULL REFERENCES inbound (id),
            list_id TEXT NOT NULL,
            sender TEXT NOT NULL,
            subject TEXT NOT NULL,
            reason TEXT NOT NULL,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            state TEXT NOT NULL DEFAULT 'held'
                CHECK (state IN ('held', 'approved', 'discarded', 'expired')),
            decided_by TEXT,
            decided_at REAL,
            UNIQUE (inbound_id, list_id)
        )""",
        """CREATE TABLE counters (
            key TEXT NOT NULL,
            day INTEGER NOT NULL,
            count INTEGER NOT NULL,
            PRIMARY KEY (key, day)
        ) WITHOUT ROWID""",
    ),
)
