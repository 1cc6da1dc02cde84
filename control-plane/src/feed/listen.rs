//! Relays PostgreSQL NOTIFYs from other replicas into this replica's
//! [`FeedNotifier`], so its follower reads the new version at once instead
//! of at the next periodic re-check.

use super::FeedNotifier;
use crate::db::feed::PG_CHANNEL;
use std::time::Duration;

/// Listens on [`PG_CHANNEL`], reconnecting forever. A wake-up is also sent
/// after each (re)connect, since notifications sent while disconnected are
/// lost; the follower's periodic re-check covers the gap before that.
pub async fn listen_postgres(url: String, notifier: FeedNotifier) {
    loop {
        match sqlx::postgres::PgListener::connect(&url).await {
            Ok(mut listener) => {
                if let Err(e) = listener.listen(PG_CHANNEL).await {
                    tracing::warn!(error = %e, "feed LISTEN failed");
                } else {
                    notifier.changed();
                    loop {
                        // `try_recv` (unlike `recv`) says when the connection
                        // was lost: it has reconnected and listens again by
                        // the time it returns `None`, so a wake-up then makes
                        // the follower read what was missed meanwhile.
                        match listener.try_recv().await {
                            Ok(Some(_)) => notifier.changed(),
                            Ok(None) => {
                                tracing::warn!(
                                    "feed listener lost its connection; listening again"
                                );
                                notifier.changed();
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "feed listener lost its connection");
                                break;
                            }
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "feed listener cannot connect"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
