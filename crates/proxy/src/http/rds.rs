//! Route configurations received over RDS, by name. HTTP connection managers with `rds` look
//! their table up per request, so an update reaches connections that are already open.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::listener::RouteSource;
use crate::config::route::RouteTable;

#[derive(Default)]
pub struct RouteStore {
    tables: ArcSwap<HashMap<String, Arc<RouteTable>>>,
}

impl RouteStore {
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
