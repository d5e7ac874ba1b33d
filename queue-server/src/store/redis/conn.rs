//! The connection to Redis: one server (`ConnectionManager`, reconnecting by itself) or a Redis
//! Cluster (`--redis-cluster`: the cluster client follows the slot map, MOVED and ASK, and
//! reconnects to nodes by itself). Both multiplex every request of this replica over their
//! sockets; the store talks to either through redis' `ConnectionLike`.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

/// Longest wait for an answer from Redis; a 100,000-item batch takes well under a second.
pub(super) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a connection to Redis.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A connection to a single Redis or to a Redis Cluster. Cheap to clone; clones share sockets.
#[derive(Clone)]
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    /// Prepares the connection without connecting (a server starts, not ready, while Redis is
    /// down). `urls` is one URL, or with `cluster` one or more comma-separated seed nodes.
    /// Also returns a client per URL, for the wake channel's subscription.
    pub(super) fn open(urls: &str, cluster: bool) -> anyhow::Result<(Conn, Vec<redis::Client>)> {
        // Only a cluster's URL is a list: a single Redis's password may hold a comma.
        let urls: Vec<&str> = if cluster {
            urls.split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .collect()
        } else {
            vec![urls.trim()]
        };
        let clients = urls
            .iter()
            .map(|url| {
                redis::Client::open(*url).map_err(|e| {
                    let hint = if !cluster && url.contains(",redis") {
                        "; several comma-separated nodes are for a Redis Cluster (add --redis-cluster)"
                    } else {
                        ""
                    };
                    anyhow::anyhow!("--redis {url}: {e}{hint}")
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let Some(first) = clients.first() else {
            anyhow::bail!("--redis names no URL");
        };
        if !cluster {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(Some(RESPONSE_TIMEOUT))
                // Fail a request fast while Redis is away (503); the next request reconnects.
                .set_number_of_retries(1)
                .set_min_delay(Duration::from_millis(50))
                .set_max_delay(Duration::from_millis(500))
                .set_pipeline_buffer_size(1024);
            let conn = ConnectionManager::new_lazy_with_config(first.clone(), config)
                .map_err(|e| anyhow::anyhow!("--redis: {e}"))?;
            return Ok((Conn::Single(conn), clients));
        }
        let infos = clients.iter().map(|c| c.get_connection_info().clone());
        let client = ClusterClientBuilder::new(infos)
            // A few quick retries (MOVED during a resharding, a failover): then 503.
            .retries(2)
            .min_retry_wait(20)
            .max_retry_wait(500)
            .build()
            .map_err(|e| anyhow::anyhow!("--redis (cluster): {e}"))?;
        let config = ClusterConfig::new()
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(RESPONSE_TIMEOUT);
        let conn = client.get_pending_async_connection_with_config(config);
        Ok((Conn::Cluster(conn), clients))
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_single_redis_url_is_taken_whole_and_a_cluster_url_is_a_list() {
        // A comma in a password (allowed in a URL's user info) is not a list separator.
        let (_, clients) = Conn::open("redis://:pa,ss@127.0.0.1:6379/0", false).unwrap();
        assert_eq!(clients.len(), 1);
        let (_, clients) =
            Conn::open("redis://127.0.0.1:7000, redis://127.0.0.1:7001", true).unwrap();
        assert_eq!(clients.len(), 2);
        let err = Conn::open("redis://127.0.0.1:7000,redis://127.0.0.1:7001", false)
            .err()
            .unwrap();
        assert!(err.to_string().contains("--redis-cluster"), "{err}");
    }
}
