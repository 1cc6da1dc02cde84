//! Database access: one `sqlx::AnyPool` for SQLite and PostgreSQL.
//!
//! Why `AnyPool`: the same query text runs on both backends (`$N`
//! placeholders, which SQLite accepts too; integers for times and booleans),
//! so there is one implementation of every query rather than two. Schema
//! differences live only in the two migration folders. PostgreSQL-only
//! features (LISTEN/NOTIFY) are reached through [`Backend`].

pub mod feed;
pub mod key_rotation;
pub mod keys;
pub mod revocations;
pub mod rules;
pub mod servers;
pub mod sessions;
pub mod settings;
pub mod unused_keys;
pub mod users;

use crate::feed::FeedNotifier;
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::migrate::MigrateDatabase;
use sqlx::{Any, AnyConnection, AnyPool, Transaction};
use std::ops::{Deref, DerefMut};
use std::time::Duration;

pub type Tx = Transaction<'static, Any>;

/// A transaction that may change what the edge sees (see [`Db::begin_write`]).
/// Committing it is the only way to commit one, and that wakes this
/// replica's long polls, so no handler can forget to: a missed wake-up would
/// cost every edge up to the feed's re-check interval.
pub struct FeedTx {
    tx: Tx,
    feed: FeedNotifier,
}

impl FeedTx {
    /// Commits, then wakes the long polls waiting on this replica (other
    /// replicas hear of it through the NOTIFY queued by [`feed::bump`]).
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await?;
        self.feed.changed();
        Ok(())
    }
}

impl Deref for FeedTx {
    type Target = Tx;
    fn deref(&self) -> &Tx {
        &self.tx
    }
}

impl DerefMut for FeedTx {
    fn deref_mut(&mut self) -> &mut Tx {
        &mut self.tx
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn from_url(url: &str) -> Result<Self, String> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            Err("database URL must start with sqlite: or postgres://".to_owned())
        }
    }
}

#[derive(Clone)]
pub struct Db {
    pub pool: AnyPool,
    pub backend: Backend,
    /// Feed versions the change log keeps (see [`feed::bump`]).
    pub feed_log_retention: i64,
    /// Wakes this replica's long polls; [`FeedTx::commit`] is what calls it.
    pub feed: FeedNotifier,
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

impl Db {
    /// Connects (creating a missing SQLite file) and runs migrations.
    pub async fn connect(url: &str, feed_log_retention: i64) -> Result<Self, sqlx::Error> {
        install_default_drivers();
        let backend = Backend::from_url(url).map_err(|e| sqlx::Error::Configuration(e.into()))?;
        if backend == Backend::Sqlite && !Any::database_exists(url).await? {
            Any::create_database(url).await?;
        }
        let pool = AnyPoolOptions::new()
            .max_connections(match backend {
                Backend::Sqlite => 8,
                Backend::Postgres => 16,
            })
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        let migrator = match backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator.run(&pool).await?;
        Ok(Self {
            pool,
            backend,
            feed_log_retention: feed_log_retention.max(1),
            feed: FeedNotifier::default(),
        })
    }

    /// Starts a transaction that may change what the edge sees, holding the
    /// feed's write lock from the first statement: SQLite takes its database
    /// write lock (`BEGIN IMMEDIATE`, so writers queue on the busy timeout
    /// instead of failing to upgrade a read lock), PostgreSQL locks the
    /// `feed_state` row. Validation and mutation then see one consistent
    /// state (no key created against a server deleted meanwhile), and
    /// versions are assigned in commit order.
    /// Committing the returned [`FeedTx`] wakes the long polls.
    pub async fn begin_write(&self) -> Result<FeedTx, sqlx::Error> {
        let tx = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => {
                let mut tx = self.pool.begin().await?;
                sqlx::query("SELECT version FROM feed_state WHERE id = 1 FOR UPDATE")
                    .execute(&mut *tx)
                    .await?;
                tx
            }
        };
        Ok(FeedTx {
            tx,
            feed: self.feed.clone(),
        })
    }

    /// A write transaction that leaves the feed alone (usage reports).
    pub async fn begin_plain_write(&self) -> Result<Tx, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        }
    }

    pub async fn conn(&self) -> Result<sqlx::pool::PoolConnection<Any>, sqlx::Error> {
        self.pool.acquire().await
    }

    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
    }
}

/// True for a UNIQUE constraint failure, on either backend.
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

pub type Conn = AnyConnection;

/// Stored booleans are 0/1 integers on both backends.
pub fn flag(b: bool) -> i64 {
    i64::from(b)
}
