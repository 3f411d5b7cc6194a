//! Load balancing: priority selection with Envoy's overprovisioning and panic rules, then
//! round robin, least request (power of two choices), random, ring hash or Maglev within it.
//!
//! A snapshot is built from the hosts' health when it changes; picking is lock-free.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use xxhash_rust::xxh64::xxh64;

use super::Host;
use crate::config::cluster::LbPolicy;
use crate::config::ClusterConfig;

pub struct LbSnapshot {
    pub version: u64,
    /// Percent of traffic per priority (sums to 100 when any host exists).
    priority_load: Vec<u32>,
    levels: Vec<Level>,
    policy: LbPolicy,
}

struct Level {
    /// Hosts to pick from: healthy ones, or all in panic mode.
    hosts: Vec<Arc<Host>>,
    /// Smooth weighted round-robin schedule (indices into `hosts`), when weights differ.
    schedule: Vec<usize>,
    cursor: AtomicUsize,
    ring: Vec<(u64, usize)>,
    maglev: Vec<usize>,
    total_weight: u64,
}

impl LbSnapshot {
    pub fn build(cfg: &ClusterConfig, hosts: &[Arc<Host>], version: u64) -> LbSnapshot {
        let levels_n = hosts.iter().map(|h| h.priority as usize + 1).max().unwrap_or(0);
        let mut all: Vec<Vec<Arc<Host>>> = vec![Vec::new(); levels_n];
        for h in hosts {
            all[h.priority as usize].push(h.clone());
        }
        let factor = f64::from(cfg.overprovisioning_factor) / 100.0;
        let health: Vec<u32> = all
            .iter()
            .map(|lvl| {
                if lvl.is_empty() {
                    return 0;
                }
                let healthy = lvl.iter().filter(|h| h.is_healthy()).count() as f64;
                ((healthy / lvl.len() as f64) * factor * 100.0).min(100.0) as u32
            })
            .collect();
        let total_health: u32 = health.iter().sum::<u32>().min(100);
        // Envoy: when the normalized total health is below the panic threshold, every host of
        // the chosen priority is used regardless of health.
        let panic = (total_health as f64) < cfg.healthy_panic_threshold;
        let mut priority_load = vec![0u32; levels_n];
        if total_health == 0 {
            if levels_n > 0 {
                priority_load[0] = 100;
            }
        } else {
            let mut remaining = 100u32;
            for (i, h) in health.iter().enumerate() {
                // Scale so the loads add to 100 even when total health is below 100.
                let share = ((u64::from(*h) * 100) / u64::from(total_health)) as u32;
                let l = share.min(remaining);
                priority_load[i] = l;
                remaining -= l;
            }
            if remaining > 0 {
                if let Some(i) = health.iter().position(|h| *h > 0) {
                    priority_load[i] += remaining;
                }
            }
        }
        let levels = all
            .into_iter()
            .map(|lvl| {
                let hosts: Vec<Arc<Host>> = if panic { lvl } else { lvl.into_iter().filter(|h| h.is_healthy()).collect() };
                Level::build(hosts, cfg.lb)
            })
            .collect();
        LbSnapshot { version, priority_load, levels, policy: cfg.lb }
    }

    /// Picks a host; `hash` is the request's hash key for ring hash and Maglev.
    pub fn pick(&self, hash: Option<u64>) -> Option<Arc<Host>> {
        let level = self.pick_level(hash)?;
        let n = level.hosts.len();
        if n == 0 {
            return None;
        }
        let idx = match self.policy {
            LbPolicy::RoundRobin => {
                let c = level.cursor.fetch_add(1, Ordering::Relaxed);
                if level.schedule.is_empty() {
                    c % n
                } else {
                    level.schedule[c % level.schedule.len()]
                }
            }
            LbPolicy::Random => level.weighted_random(),
            LbPolicy::LeastRequest { choice_count } => {
                let mut best = level.weighted_random();
                for _ in 1..choice_count {
                    let other = level.weighted_random();
                    if level.hosts[other].active_requests.load(Ordering::Relaxed)
                        < level.hosts[best].active_requests.load(Ordering::Relaxed)
                    {
                        best = other;
                    }
                }
                best
            }
            LbPolicy::RingHash { .. } => match hash {
                Some(h) if !level.ring.is_empty() => {
                    let i = level.ring.partition_point(|(p, _)| *p < h);
                    level.ring[if i == level.ring.len() { 0 } else { i }].1
                }
                _ => level.weighted_random(),
            },
            LbPolicy::Maglev { .. } => match hash {
                Some(h) if !level.maglev.is_empty() => level.maglev[(h % level.maglev.len() as u64) as usize],
                _ => level.weighted_random(),
            },
            LbPolicy::ClusterProvided => return None,
        };
        level.hosts.get(idx).cloned()
    }

    fn pick_level(&self, hash: Option<u64>) -> Option<&Level> {
        if self.levels.len() == 1 {
            return self.levels.first();
        }
        let point = match hash {
            Some(h) => (h % 100) as u32,
            None => rand::random::<u32>() % 100,
        };
        let mut acc = 0;
        for (i, l) in self.priority_load.iter().enumerate() {
            acc += l;
            if point < acc {
                return self.levels.get(i);
            }
        }
        self.levels.first()
    }
}

impl Level {
    fn build(hosts: Vec<Arc<Host>>, policy: LbPolicy) -> Level {
        let total_weight: u64 = hosts.iter().map(|h| u64::from(h.weight)).sum();
        let uniform = hosts.windows(2).all(|w| w[0].weight == w[1].weight);
        let schedule =
            if matches!(policy, LbPolicy::RoundRobin) && !uniform && total_weight <= 100_000 { smooth_wrr(&hosts) } else { Vec::new() };
        let ring = match policy {
            LbPolicy::RingHash { min_ring, max_ring } => build_ring(&hosts, min_ring, max_ring),
            _ => Vec::new(),
        };
        let maglev = match policy {
            LbPolicy::Maglev { table_size } => build_maglev(&hosts, table_size),
            _ => Vec::new(),
        };
        // Start round robin at a random offset so several proxies do not move in lockstep.
        let cursor = AtomicUsize::new(if hosts.is_empty() { 0 } else { rand::random::<usize>() % hosts.len().max(1) });
        Level { hosts, schedule, cursor, ring, maglev, total_weight }
    }

    fn weighted_random(&self) -> usize {
        if self.total_weight == 0 || self.hosts.len() <= 1 {
            return 0;
        }
        let mut r = rand::random::<u64>() % self.total_weight;
        for (i, h) in self.hosts.iter().enumerate() {
            let w = u64::from(h.weight);
            if r < w {
                return i;
            }
            r -= w;
        }
        0
    }
}

/// nginx's smooth weighted round robin, unrolled into one full cycle.
fn smooth_wrr(hosts: &[Arc<Host>]) -> Vec<usize> {
    let total: i64 = hosts.iter().map(|h| i64::from(h.weight)).sum();
    let mut current = vec![0i64; hosts.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, h) in hosts.iter().enumerate() {
            current[i] += i64::from(h.weight);
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        out.push(best);
    }
    out
}

fn host_key(h: &Host) -> String {
    h.addr.to_string()
}

fn build_ring(hosts: &[Arc<Host>], min_ring: u64, max_ring: u64) -> Vec<(u64, usize)> {
    if hosts.is_empty() {
        return Vec::new();
    }
    let total: u64 = hosts.iter().map(|h| u64::from(h.weight)).sum();
    let min_w = hosts.iter().map(|h| u64::from(h.weight)).min().unwrap_or(1) as f64 / total as f64;
    let scale = ((min_ring as f64 * min_w).ceil() / min_w).min(max_ring as f64);
    let mut ring = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        let n = ((u64::from(h.weight) as f64 / total as f64) * scale).ceil() as u64;
        let key = host_key(h);
        for j in 0..n.max(1) {
            ring.push((xxh64(format!("{key}_{j}").as_bytes(), 0), i));
        }
    }
    ring.sort_unstable_by_key(|(p, _)| *p);
    ring
}

fn build_maglev(hosts: &[Arc<Host>], m: u64) -> Vec<usize> {
    if hosts.is_empty() {
        return Vec::new();
    }
    let max_w = hosts.iter().map(|h| u64::from(h.weight)).max().unwrap_or(1) as f64;
    let perms: Vec<(u64, u64)> = hosts
        .iter()
        .map(|h| {
            let k = host_key(h);
            (xxh64(k.as_bytes(), 0) % m, xxh64(k.as_bytes(), 1) % (m - 1) + 1)
        })
        .collect();
    let mut next = vec![0u64; hosts.len()];
    let mut weight_acc = vec![0f64; hosts.len()];
    let mut table = vec![usize::MAX; m as usize];
    let mut filled = 0u64;
    let mut iteration = 1f64;
    while filled < m {
        for i in 0..hosts.len() {
            // Weighted Maglev: a host takes a slot in proportion to its weight.
            weight_acc[i] += f64::from(hosts[i].weight) / max_w;
            if weight_acc[i] < iteration {
                continue;
            }
            let (offset, skip) = perms[i];
            loop {
                let c = ((offset + next[i] * skip) % m) as usize;
                next[i] += 1;
                if table[c] == usize::MAX {
                    table[c] = i;
                    filled += 1;
                    break;
                }
            }
            if filled == m {
                break;
            }
        }
        iteration += 1.0;
    }
    table
}

/// Combines successive hash-policy values as Envoy does (rotate left one bit, xor).
pub fn combine_hash(acc: Option<u64>, h: u64) -> u64 {
    match acc {
        None => h,
        Some(a) => a.rotate_left(1) ^ h,
    }
}

pub fn hash_bytes(b: &[u8]) -> u64 {
    xxh64(b, 0)
}
