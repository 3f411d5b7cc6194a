//! Route configurations received over RDS, by name. HTTP connection managers with `rds` look
//! their table up per request, so an update reaches connections that are already open.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::config::listener::RouteSource;
use crate::config::route::RouteTable;
use crate::upstream::on_demand::OnDemand;

#[derive(Default)]
pub struct RouteStore {
    tables: ArcSwap<HashMap<String, Arc<RouteTable>>>,
    /// Virtual hosts fetched on first use (VHDS), for tables that say `vhds`.
    on_demand: OnceLock<Arc<OnDemand>>,
}

/// How long a host the control plane said it has no virtual host for goes straight to the
/// catch-all before it is asked about again (a service added meanwhile is then found).
pub const REFUSAL_TTL: Duration = Duration::from_secs(10);

/// Why a request's virtual host could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostMissing {
    #[error("no virtual host for {host:?} is held yet in route configuration {route:?} and the control plane is unreachable, so it cannot be fetched")]
    Unreachable { route: String, host: String },
    #[error("the virtual host for {host:?} in route configuration {route:?} was asked of the control plane and did not arrive within {}s", deadline.as_secs())]
    Timeout { route: String, host: String, deadline: Duration },
    #[error("no virtual host for {host:?} is held yet in route configuration {route:?}, and {MAX_PENDING} other hosts are being fetched already")]
    Busy { route: String, host: String },
}

/// Hosts asked of the control plane and not answered yet, at most: an application naming ever
/// new hosts gets 503s rather than growing the proxy's subscription without bound.
pub const MAX_PENDING: usize = 256;

/// The longest host (with its port) that can name a virtual host: a DNS name is at most 253
/// bytes. A longer one is not asked about; it goes to the catch-all.
const MAX_HOST: usize = 253 + 6;

/// The VHDS resource name a request for `host` on `table` subscribes to (Envoy's form).
pub fn alias(table: &str, host: &str) -> String {
    format!("{table}/{}", host.to_ascii_lowercase())
}

/// The route table and host a VHDS alias names.
pub fn split_alias(alias: &str) -> Option<(&str, &str)> {
    alias.split_once('/')
}

impl RouteStore {
    pub fn enable_on_demand(&self, od: Arc<OnDemand>) {
        let _ = self.on_demand.set(od);
    }

    pub fn on_demand(&self) -> Option<&Arc<OnDemand>> {
        self.on_demand.get()
    }

    /// Whether any table fetches virtual hosts on demand (then VHDS is subscribed to).
    pub fn any_on_demand(&self) -> bool {
        self.tables.load().values().any(|t| t.on_demand)
    }

    /// Whether the table an alias names now has a virtual host for its host.
    pub fn resolves(&self, alias: &str) -> bool {
        let Some((table, host)) = split_alias(alias) else { return false };
        self.tables.load().get(table).is_some_and(|t| crate::http::routing::names_host(t, host))
    }

    /// The table `source` names for a request to `host`. A table that fetches virtual hosts
    /// on demand and has none naming `host` asks the control plane for it first and waits,
    /// bounded; a host the control plane has none for goes to the table's catch-all, as in a
    /// table that lists every virtual host.
    pub async fn table_for(
        &self,
        source: &RouteSource,
        host: &str,
        stats: &crate::stats::ManagerStats,
    ) -> Result<Arc<RouteTable>, HostMissing> {
        let table = self.table(source);
        let Some(od) = self.on_demand.get().filter(|_| table.on_demand) else { return Ok(table) };
        if crate::http::routing::names_host(&table, host) {
            return Ok(table);
        }
        let alias = alias(&table.name, host);
        // Answered before (or unanswerable): the catch-all. A refusal of any age stands while
        // the control plane is away, so calls out of the mesh keep working meanwhile.
        if host.len() > MAX_HOST || od.refused_within(&alias, REFUSAL_TTL) || (!od.is_connected() && od.is_refused(&alias)) {
            return Ok(table);
        }
        if !od.is_wanted(&alias) && od.pending() >= MAX_PENDING {
            stats.vhds_failed.inc();
            return Err(HostMissing::Busy { route: table.name.clone(), host: host.to_owned() });
        }
        let mut changes = od.watch();
        if od.ask(&alias) {
            stats.vhds_requested.inc();
            tracing::debug!(route = %table.name, host, "fetching a virtual host on first use");
        }
        let deadline = tokio::time::Instant::now() + od.deadline();
        loop {
            let table = self.table(source);
            // Held now; or answered as having none (refused: no longer asked for).
            if crate::http::routing::names_host(&table, host) || od.is_refused(&alias) || !od.is_wanted(&alias) {
                return Ok(table);
            }
            let failed = if !od.is_connected() {
                HostMissing::Unreachable { route: table.name.clone(), host: host.to_owned() }
            } else if tokio::time::timeout_at(deadline, changes.changed()).await.is_err() {
                HostMissing::Timeout { route: table.name.clone(), host: host.to_owned(), deadline: od.deadline() }
            } else {
                continue;
            };
            od.give_up(&alias);
            stats.vhds_failed.inc();
            return Err(failed);
        }
    }

    /// The table a connection manager routes with right now.
    pub fn table(&self, source: &RouteSource) -> Arc<RouteTable> {
        match source {
            RouteSource::Inline(t) => t.clone(),
            RouteSource::Rds(name) => self.tables.load().get(name).cloned().unwrap_or_else(|| Arc::new(RouteTable::empty(name))),
        }
    }

    pub fn get(&self, name: &str) -> Option<Arc<RouteTable>> {
        self.tables.load().get(name).cloned()
    }

    /// Replaces the whole set (state-of-the-world RDS: what is not named is gone).
    pub fn replace(&self, tables: HashMap<String, Arc<RouteTable>>) {
        self.tables.store(Arc::new(tables));
    }

    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.tables.load().keys().cloned().collect();
        v.sort();
        v
    }
}
