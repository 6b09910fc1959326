//! Redis Cluster on 127.0.0.1: six `redis-server` processes in cluster mode with the module
//! loaded, joined by `redis-cli --cluster create` into three masters with a replica each; the
//! topology every live node agrees on, nodes killed on purpose, and slot migration done the
//! way `redis-cli --cluster reshard` does it.
//!
//! `REDIS_SERVER` picks the server binary (as for every [`Server`]); `REDIS_CLI` the
//! `redis-cli` that creates the cluster (default `redis-cli` on `PATH`).

use std::collections::{BTreeMap, BTreeSet};
use std::env;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use redis::cluster::{ClusterClient, ClusterConnection};
use redis::{Connection, RedisResult, Value};

use crate::inspect::{info, info_value};
use crate::resp::{call, int, okay, text};
use crate::server::{free_port, tail, Server};

/// `cluster-node-timeout`: a master unreachable this long is marked failing; its replica then
/// takes over within about two more timeouts. Long enough that a node starved of CPU by a
/// loaded machine is not taken for dead (a failover no test asked for would lose writes).
pub const NODE_TIMEOUT_MS: u64 = 3_000;
/// The longest any cluster-wide wait may take (creation, agreement, failover): what takes a
/// few seconds on an idle machine can take many on a loaded one; only a failure exhausts it.
pub const CLUSTER_WAIT: Duration = Duration::from_secs(60);
/// How long `redis-cli --cluster create` may run.
pub const CREATE_TIMEOUT: Duration = Duration::from_secs(120);
/// Hash slots of a Redis Cluster.
pub const SLOTS: usize = 16_384;

/// The `redis-cli` that creates a cluster: `REDIS_CLI`, else the one on `PATH`.
pub fn redis_cli() -> String {
    match env::var("REDIS_CLI") {
        Ok(bin) if !bin.is_empty() => bin,
        _ => "redis-cli".to_string(),
    }
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLine {
    pub id: String,
    pub port: u16,
    pub flags: Vec<String>,
    /// The master's id for a replica.
    pub master_id: Option<String>,
    /// Slot ranges served (masters only; importing/migrating markers left out).
    pub slots: Vec<(usize, usize)>,
}

impl NodeLine {
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }
    pub fn is_master(&self) -> bool {
        self.has_flag("master")
    }
}

/// `CLUSTER NODES`'s text, a line each.
pub fn parse_cluster_nodes(text: &str) -> Vec<NodeLine> {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert!(fields.len() >= 8, "odd CLUSTER NODES line {line:?}");
            // ip:port@cport[,hostname]
            let addr = fields[1].split('@').next().unwrap_or("");
            let port = addr
                .rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            let flags = fields[2].split(',').map(str::to_string).collect();
            let master_id = (fields[3] != "-").then(|| fields[3].to_string());
            let slots = fields[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .map(|s| match s.split_once('-') {
                    Some((a, b)) => (a.parse().expect("slot"), b.parse().expect("slot")),
                    None => {
                        let n = s.parse().expect("slot");
                        (n, n)
                    }
                })
                .collect();
            NodeLine {
                id: fields[0].to_string(),
                port,
                flags,
                master_id,
                slots,
            }
        })
        .collect()
}

/// Who serves what, as every live node agrees: indices into `Cluster::nodes`.
#[derive(Debug, Clone)]
pub struct Topology {
    pub masters: Vec<usize>,
    /// (replica, its master).
    pub replicas: Vec<(usize, usize)>,
    /// The master serving each slot.
    pub owner: Vec<usize>,
}

impl Topology {
    /// The replica of `master`; panics when it has none.
    pub fn replica_of(&self, master: usize) -> usize {
        match self.replicas.iter().find(|(_, m)| *m == master) {
            Some((r, _)) => *r,
            None => panic!("master {master} has no replica: {self:?}"),
        }
    }
}

/// Six `redis-server` processes in cluster mode with the module loaded, killed on drop.
pub struct Cluster {
    /// The nodes, by the index every [`Topology`] uses.
    pub nodes: Vec<Server>,
    ids: Vec<String>,
    dead: BTreeSet<usize>,
}

/// One node of a [`Cluster`]: a [`Server`] in cluster mode, not joined to any other yet.
pub fn start_node() -> Server {
    let bus = free_port().to_string();
    let timeout = NODE_TIMEOUT_MS.to_string();
    // The node's `--dir` is its own temp dir, so nodes.conf lands there.
    Server::start_with(&[
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
        "--cluster-node-timeout",
        &timeout,
        // Explicit: port + 10000 may not exist for a port of the ephemeral range.
        "--cluster-port",
        &bus,
        "--enable-debug-command",
        "yes",
        // A replica's first full sync starts at once, not after the default 5 s wait for more
        // replicas.
        "--repl-diskless-sync-delay",
        "0",
        // A replica whose link has been down for a while still takes over its failed master:
        // how long the failover took on a loaded machine never decides whether it happens.
        "--cluster-replica-validity-factor",
        "0",
    ])
}

impl Cluster {
    /// Starts six nodes, joins them with `redis-cli --cluster create … --cluster-replicas 1`
    /// and waits until every node agrees and every replica is in sync.
    pub fn start() -> Cluster {
        let started = Instant::now();
        let nodes: Vec<Server> = (0..6).map(|_| start_node()).collect();
        let ids = nodes
            .iter()
            .map(|n| text(&call(&mut n.conn(), &["CLUSTER", "MYID"]).expect("CLUSTER MYID")))
            .collect();
        let cluster = Cluster {
            nodes,
            ids,
            dead: BTreeSet::new(),
        };
        cluster.create();
        let topology = cluster.wait_stable(CLUSTER_WAIT);
        assert_eq!(topology.masters.len(), 3, "{topology:?}");
        assert_eq!(topology.replicas.len(), 3, "{topology:?}");
        println!(
            "cluster of 6 nodes up in {} ms",
            started.elapsed().as_millis()
        );
        cluster
    }

    fn create(&self) {
        let mut command = Command::new(redis_cli());
        command.arg("--cluster").arg("create");
        for node in &self.nodes {
            command.arg(format!("127.0.0.1:{}", node.port()));
        }
        command
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => panic!("cannot run {} (set REDIS_CLI): {e}", redis_cli()),
        };
        let deadline = Instant::now() + CREATE_TIMEOUT;
        let status = loop {
            if let Ok(Some(status)) = child.try_wait() {
                break Some(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            thread::sleep(Duration::from_millis(20));
        };
        let output = child.wait_with_output().expect("redis-cli output");
        let out = String::from_utf8_lossy(&output.stdout);
        let err = String::from_utf8_lossy(&output.stderr);
        assert!(
            status.is_some_and(|s| s.success()) && out.contains("[OK] All 16384 slots covered"),
            "redis-cli --cluster create failed (status {status:?}):\n{out}\n{err}\n{}",
            self.logs()
        );
    }

    /// The tails of every node's log, for failure messages.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| format!("--- node {i} (port {}) ---\n{}\n", n.port(), tail(&n.log())))
            .collect()
    }

    /// The nodes not killed by [`Cluster::kill`].
    pub fn live(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|i| !self.dead.contains(i))
    }

    fn index_of_id(&self, id: &str) -> usize {
        match self.ids.iter().position(|x| x == id) {
            Some(i) => i,
            None => panic!("unknown node id {id}"),
        }
    }

    /// Node `i`'s `host:port`.
    pub fn addr(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.nodes[i].port())
    }

    /// A plain (not cluster-aware) connection to one node.
    pub fn node(&self, i: usize) -> Connection {
        self.nodes[i].conn()
    }

    /// A cluster client seeded with every live node.
    pub fn client(&self) -> ClusterClient {
        let urls: Vec<String> = self.live().map(|i| self.nodes[i].url()).collect();
        ClusterClient::builder(urls)
            .connection_timeout(Duration::from_secs(10))
            .response_timeout(Duration::from_secs(20))
            .build()
            .expect("cluster client")
    }

    /// A cluster connection (routes each command by its key).
    pub fn conn(&self) -> ClusterConnection {
        match self.client().get_connection() {
            Ok(con) => con,
            Err(e) => panic!("cannot connect to the cluster: {e}\n{}", self.logs()),
        }
    }

    /// Node `i`'s view of the cluster.
    pub fn view(&self, i: usize) -> RedisResult<Vec<NodeLine>> {
        let mut con = self.nodes[i].conn();
        let nodes: String = redis::cmd("CLUSTER").arg("NODES").query(&mut con)?;
        Ok(parse_cluster_nodes(&nodes))
    }

    /// One attempt at reading an agreed, healthy topology: every live node says
    /// `cluster_state:ok`, sees the same live nodes with the same roles and slots (no
    /// handshake, no failure flag on a live node), and every live replica's link is up and
    /// caught up with its master.
    pub fn stable_topology(&self) -> Result<Topology, String> {
        let live: BTreeSet<String> = self.live().map(|i| self.ids[i].clone()).collect();
        let mut agreed: Option<Vec<NodeLine>> = None;
        for i in self.live() {
            let mut con = self.nodes[i].conn();
            let info: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query(&mut con)
                .map_err(|e| format!("node {i}: CLUSTER INFO: {e}"))?;
            if info_value(&info, "cluster_state").as_deref() != Some("ok") {
                return Err(format!("node {i}: cluster_state is not ok"));
            }
            let mut view: Vec<NodeLine> = self
                .view(i)
                .map_err(|e| format!("node {i}: {e}"))?
                .into_iter()
                .filter(|n| live.contains(&n.id))
                .map(|mut n| {
                    n.flags.retain(|f| f != "myself");
                    n
                })
                .collect();
            view.sort_by(|a, b| a.id.cmp(&b.id));
            if view.len() != live.len() {
                return Err(format!("node {i} knows {} of the live nodes", view.len()));
            }
            if let Some(bad) = view.iter().find(|n| {
                n.flags
                    .iter()
                    .any(|f| f != "master" && f != "slave" && f != "nofailover")
            }) {
                return Err(format!("node {i} sees {} as {:?}", bad.port, bad.flags));
            }
            match &agreed {
                None => agreed = Some(view),
                Some(first) if *first == view => {}
                Some(_) => return Err(format!("node {i} disagrees about the topology")),
            }
        }
        let view = agreed.ok_or("no live node")?;
        let mut owner = vec![usize::MAX; SLOTS];
        let mut masters = Vec::new();
        let mut replicas = Vec::new();
        for n in &view {
            let index = self.index_of_id(&n.id);
            if n.is_master() {
                masters.push(index);
                for &(a, b) in &n.slots {
                    for slot in owner.iter_mut().take(b + 1).skip(a) {
                        *slot = index;
                    }
                }
            } else {
                let master = n.master_id.as_deref().ok_or("replica without master")?;
                replicas.push((index, self.index_of_id(master)));
            }
        }
        if owner.contains(&usize::MAX) {
            return Err("some slots have no live master".into());
        }
        for &(replica, master) in &replicas {
            if self.dead.contains(&master) {
                return Err(format!("replica {replica} still follows dead {master}"));
            }
            let r = info(&mut self.nodes[replica].conn(), "replication");
            let m = info(&mut self.nodes[master].conn(), "replication");
            if info_value(&r, "master_link_status").as_deref() != Some("up") {
                return Err(format!("replica {replica}: link to its master is not up"));
            }
            let (m_off, r_off) = (
                info_value(&m, "master_repl_offset"),
                info_value(&r, "master_repl_offset"),
            );
            if m_off != r_off {
                return Err(format!(
                    "replica {replica} at {r_off:?}, its master at {m_off:?}"
                ));
            }
        }
        masters.sort_unstable();
        replicas.sort_unstable();
        Ok(Topology {
            masters,
            replicas,
            owner,
        })
    }

    /// Waits until `stable_topology` succeeds; panics with the last reason after `timeout`.
    pub fn wait_stable(&self, timeout: Duration) -> Topology {
        let deadline = Instant::now() + timeout;
        loop {
            match self.stable_topology() {
                Ok(topology) => return topology,
                Err(reason) if Instant::now() >= deadline => panic!(
                    "the cluster did not settle within {timeout:?}: {reason}\n{}",
                    self.logs()
                ),
                Err(_) => thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// SIGKILL node `i`.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
        self.dead.insert(i);
    }

    /// The hash slot of a key, as the cluster computes it.
    pub fn keyslot(&self, key: &str) -> usize {
        let i = self.live().next().expect("a live node");
        let slot = int(call(&mut self.node(i), &["CLUSTER", "KEYSLOT", key]));
        usize::try_from(slot).expect("slot")
    }

    /// Moves `slot` from its master to `target` the way `redis-cli --cluster reshard` does:
    /// IMPORTING on the target, MIGRATING on the source, `MIGRATE … KEYS` until the source
    /// has none left, then `SETSLOT … NODE` on the target, the source and the other masters;
    /// waits until every live node agrees.
    pub fn migrate_slot(&self, slot: usize, target: usize) -> Migration {
        let topology = self.wait_stable(CLUSTER_WAIT);
        let source = topology.owner[slot];
        assert_ne!(source, target, "slot {slot} is already on node {target}");
        let slot_text = slot.to_string();
        let (source_id, target_id) = (self.ids[source].as_str(), self.ids[target].as_str());
        let mut src = self.node(source);
        let mut dst = self.node(target);
        let setslot = |con: &mut Connection, state: &str, id: &str| {
            okay(call(con, &["CLUSTER", "SETSLOT", &slot_text, state, id]));
        };
        setslot(&mut dst, "IMPORTING", source_id);
        setslot(&mut src, "MIGRATING", target_id);
        let port = self.nodes[target].port().to_string();
        let mut moved = Vec::new();
        let mut in_migrate = Duration::ZERO;
        loop {
            let keys: Vec<String> = redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(100)
                .query(&mut src)
                .expect("CLUSTER GETKEYSINSLOT");
            if keys.is_empty() {
                break;
            }
            let sent = Instant::now();
            // The timeout is for the source's I/O to the target; below the 20 s read timeout of
            // this connection.
            let reply = redis::cmd("MIGRATE")
                .arg("127.0.0.1")
                .arg(&port)
                .arg("")
                .arg(0)
                .arg(15_000)
                .arg("KEYS")
                .arg(&keys)
                .query::<Value>(&mut src);
            in_migrate += sent.elapsed();
            okay(reply);
            moved.extend(keys);
        }
        setslot(&mut dst, "NODE", target_id);
        setslot(&mut src, "NODE", target_id);
        for &m in &topology.masters {
            if m != source && m != target {
                setslot(&mut self.node(m), "NODE", target_id);
            }
        }
        let deadline = Instant::now() + CLUSTER_WAIT;
        loop {
            let reason = match self.stable_topology() {
                Ok(t) if t.owner[slot] == target => {
                    return Migration {
                        keys: moved,
                        in_migrate,
                    }
                }
                Ok(t) => format!("slot {slot} still on node {}", t.owner[slot]),
                Err(reason) => reason,
            };
            assert!(
                Instant::now() < deadline,
                "the cluster did not agree within {CLUSTER_WAIT:?} that slot {slot} moved to \
                 node {target} ({reason})\n{}",
                self.logs()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// What `Cluster::migrate_slot` did.
pub struct Migration {
    /// The keys moved.
    pub keys: Vec<String>,
    /// How long the `MIGRATE` calls took, from sending each to its reply: a key's TTL is sent
    /// relative by the source and set again by the target within that time.
    pub in_migrate: Duration,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Each Server kills its process on drop, and fails a passing test when its node died
        // (one killed on purpose is marked stopped by `kill`). A failing test gets the logs of
        // the nodes that died, which are likely its cause.
        if thread::panicking() {
            for (i, node) in self.nodes.iter_mut().enumerate() {
                if self.dead.contains(&i) {
                    continue;
                }
                if let Err(reason) = node.check_alive() {
                    eprintln!(
                        "cluster node {i} (port {}) died: {reason}\n--- its log (tail) ---\n{}",
                        node.port(),
                        tail(&node.log())
                    );
                }
            }
        }
        self.nodes.clear();
    }
}

/// `n` key names `prefix:0`, `prefix:1`, … (no hash tags) whose owners cover every master;
/// more names are taken until each master owns at least `per_master`.
pub fn spread_keys(
    cluster: &Cluster,
    topology: &Topology,
    prefix: &str,
    per_master: usize,
) -> Vec<String> {
    let mut count: BTreeMap<usize, usize> = topology.masters.iter().map(|&m| (m, 0)).collect();
    let mut keys = Vec::new();
    for i in 0..10_000 {
        if count.values().all(|&c| c >= per_master) {
            return keys;
        }
        let key = format!("{prefix}:{i}");
        let owner = topology.owner[cluster.keyslot(&key)];
        *count.get_mut(&owner).expect("a master") += 1;
        keys.push(key);
    }
    panic!("no spread of {prefix} keys over the masters: {count:?}");
}

/// `n` key names `prefix:<i>` whose slot is served by `master`.
pub fn keys_on(
    cluster: &Cluster,
    topology: &Topology,
    master: usize,
    prefix: &str,
    n: usize,
) -> Vec<String> {
    let keys: Vec<String> = (0..10_000)
        .map(|i| format!("{prefix}:{i}"))
        .filter(|k| topology.owner[cluster.keyslot(k)] == master)
        .take(n)
        .collect();
    assert_eq!(keys.len(), n, "not enough {prefix} keys on node {master}");
    keys
}
