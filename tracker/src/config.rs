//! The tracker's configuration: TOML, every field optional with a documented default.
//!
//! ```toml
//! listen = "0.0.0.0:8000"
//!
//! [limits]
//! max_message_bytes = 65536
//!
//! [swarm]
//! max_peers_per_swarm = 20000
//! ```
//!
//! Environment overrides (applied after the file, before `--listen`): `SWARMCDN_TRACKER_LISTEN`,
//! `SWARMCDN_TRACKER_LOG`, `SWARMCDN_TRACKER_METRICS_LISTEN`, and `SWARMCDN_TRACKER__<SECTION>__<FIELD>` for any field (see
//! [`Config::apply_env_from`]).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, ensure};
use serde::{Deserialize, Serialize};
use swarmcdn_core::registry::RegistryConfig;

/// The tracker's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on, for WebSocket clients and the HTTP endpoints (`/health`,
    /// `/stats`, `/metrics`). Default `127.0.0.1:8000`.
    pub listen: SocketAddr,
    /// Log filter (`tracing` env-filter syntax). Default `info`.
    pub log: String,
    /// Threads serving connections; 0 is one per CPU core. Default 0. With 1, the whole
    /// tracker runs on one thread and spends the least CPU per message (no wake-ups across
    /// threads): the way to run one instance per core, sharded by swarm.
    pub threads: usize,
    /// A second address that serves only `/health`, `/stats` and `/metrics`: an internal port
    /// for the metrics scraper, not exposed with the WebSocket one. When set, `listen` answers
    /// 404 to `/stats` and `/metrics`. Default none: all are served on `listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
    /// When not empty, `/stats` and `/metrics` (on either address) need the header
    /// `Authorization: Bearer <metrics_token>` and answer 401 without it; `/health` stays open
    /// for load balancers. Default empty (no token). Better set from the environment
    /// (`SWARMCDN_TRACKER__METRICS_TOKEN`) than written in the file.
    pub metrics_token: String,
    /// Limits per connection and per address.
    pub limits: Limits,
    /// Swarm logic: timings and limits of the registry.
    pub swarm: SwarmConfig,
    /// Join tokens.
    pub tokens: Tokens,
    /// Who may be a seed.
    pub seeds: Seeds,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8000)),
            log: "info".into(),
            threads: 0,
            metrics_listen: None,
            metrics_token: String::new(),
            limits: Limits::default(),
            swarm: SwarmConfig::default(),
            tokens: Tokens::default(),
            seeds: Seeds::default(),
        }
    }
}

/// Join tokens (`swarmcdn_core::token`): when required, an announce must carry a valid token
/// for its swarm, signed by one of `keys`, in the `token` field of the `swarmcdn` extension.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tokens {
    /// Refuse announces without a valid token. Default false.
    pub required: bool,
    /// The issuers' ed25519 public keys, as hex (`swarmcdn-tracker keygen` makes a pair).
    pub keys: Vec<String>,
}

impl Tokens {
    /// The parsed keys.
    pub fn public_keys(&self) -> anyhow::Result<Vec<swarmcdn_core::integrity::PublicKey>> {
        self.keys
            .iter()
            .map(|k| {
                k.parse()
                    .map_err(|e| anyhow::anyhow!("tokens.keys: {k:?}: {e}"))
            })
            .collect()
    }
}

/// The seed role (`swarmcdn.role = "seed"`, and `seed_standby`) puts a peer into every
/// viewer's offers in thin swarms and keeps standby seeds from being asked to join: so it can
/// be kept to the operator's seeds, by address here, or by seed tokens (`[tokens]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Seeds {
    /// The networks seeds connect from (CIDR, e.g. `"10.0.0.0/8"`); the seed role and standby
    /// from any other address are refused with a failure reason. Empty (the default): any
    /// address.
    pub networks: Vec<ipnet::IpNet>,
}

impl Seeds {
    /// Whether a client at `ip` may take the seed role.
    pub fn allows(&self, ip: std::net::IpAddr) -> bool {
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
            v4 => v4,
        };
        self.networks.is_empty() || self.networks.iter().any(|n| n.contains(&ip))
    }
}

/// Limits that protect the tracker and its other clients from one client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest WebSocket message accepted, in bytes; a larger one closes the connection (code
    /// 1009). Default 65536: an announce with 10 non-trickle offers is about 30 KB.
    pub max_message_bytes: usize,
    /// Messages per second a connection may send on average; beyond the burst the connection
    /// is closed as a flood (code 1008). Default 20 (a client announcing in a few swarms, with
    /// answers, sends far fewer).
    pub messages_per_second: f64,
    /// Messages a connection may send at once before the rate applies. Default 50.
    pub message_burst: u32,
    /// Open connections at most; more are refused with HTTP 503. Default 100000.
    pub max_connections: usize,
    /// Open connections per IP address at most (per /64 prefix for IPv6, as a host usually
    /// holds a whole /64); more are refused with HTTP 429. Default 64 (households and offices
    /// share an address).
    pub max_connections_per_ip: usize,
    /// Messages queued to one connection before it is dropped as too slow. Default 256.
    pub outgoing_queue: usize,
    /// A write to one client (a batch of queued messages, or a close frame) that does not
    /// finish in this long drops the connection: a client that stops reading cannot hold its
    /// slot forever. Default 10 s.
    pub write_timeout_ms: u64,
    /// How long shutdown waits for connections to take their close frames. Default 2 s.
    pub shutdown_grace_ms: u64,
    /// How long a new TCP connection may take to send its HTTP request head (the WebSocket
    /// upgrade or a `/metrics` request) before it is closed, so idle sockets cannot pile up
    /// unaccounted (slowloris). Default 10 s.
    pub header_timeout_ms: u64,
    /// A WebSocket connection that has not announced (nor gone on standby) this long after
    /// its upgrade, or since it was left holding no peer in any swarm (its `stopped`, a
    /// refused announce, its peers' expiry), is closed (code 1008), so that connections in no
    /// swarm cannot hold slots. 0 turns it off. Default 30 s.
    pub join_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: 64 * 1024,
            messages_per_second: 20.0,
            message_burst: 50,
            max_connections: 100_000,
            max_connections_per_ip: 64,
            outgoing_queue: 256,
            write_timeout_ms: 10_000,
            shutdown_grace_ms: 2000,
            header_timeout_ms: 10_000,
            join_timeout_ms: 30_000,
        }
    }
}

/// The registry's settings (see `swarmcdn_core::registry::RegistryConfig`), durations in
/// seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SwarmConfig {
    /// Announce interval told to clients. Default 120.
    pub announce_interval_secs: u64,
    /// A peer silent this long is removed. Default 300.
    pub peer_timeout_secs: u64,
    /// An unanswered offer expires after this long. Default 60.
    pub offer_ttl_secs: u64,
    /// Offers used per announce (more are ignored). Default 10.
    pub max_offers_per_announce: usize,
    /// Peers per swarm (new peers are refused beyond). Default 100000.
    pub max_peers_per_swarm: usize,
    /// Swarms one connection may join (with one peer id in each). Default 64.
    pub max_swarms_per_connection: usize,
    /// Offers of one peer pending at once. Default 50.
    pub max_pending_offers_per_peer: usize,
    /// Offers to one peer pending its answer at once; a peer with this many is not offered
    /// more until it answers or they expire. Default 64.
    pub max_pending_offers_to_peer: usize,
    /// Swarms one scrape may name. Default 64.
    pub max_scrape_swarms: usize,
    /// Candidates ranked per announce. Default 64.
    pub match_sample: usize,
    /// Swarms with at most this many viewers always get a seed offered. Default 16.
    pub thin_swarm_viewers: usize,
    /// Playback positions within this many segments count as close. Default 3.
    pub position_window: u64,
    /// Seeds on standby (`seed_standby`: they join swarms without a seed when asked) at most;
    /// 0 refuses standby. With `tokens.required`, a standby needs a join token for the
    /// all-zero swarm id. Default 64.
    pub max_standby_seeds: usize,
    /// A swarm without a seed asks a standby seed at most this often, in seconds. Default 30.
    pub demand_interval_secs: u64,
}

impl Default for SwarmConfig {
    fn default() -> Self {
        let r = RegistryConfig::default();
        Self {
            announce_interval_secs: r.announce_interval.as_secs(),
            peer_timeout_secs: r.peer_timeout.as_secs(),
            offer_ttl_secs: r.offer_ttl.as_secs(),
            max_offers_per_announce: r.max_offers_per_announce,
            max_peers_per_swarm: r.max_peers_per_swarm,
            max_swarms_per_connection: r.max_swarms_per_conn,
            max_pending_offers_per_peer: r.max_pending_offers_per_peer,
            max_pending_offers_to_peer: r.max_pending_offers_to_peer,
            max_scrape_swarms: r.max_scrape_swarms,
            match_sample: r.match_sample,
            thin_swarm_viewers: r.thin_swarm_viewers,
            position_window: r.position_window,
            max_standby_seeds: r.max_standby_seeds,
            demand_interval_secs: r.demand_interval.as_secs(),
        }
    }
}

impl SwarmConfig {
    /// The registry configuration.
    pub fn registry(&self) -> RegistryConfig {
        RegistryConfig {
            announce_interval: Duration::from_secs(self.announce_interval_secs),
            peer_timeout: Duration::from_secs(self.peer_timeout_secs),
            offer_ttl: Duration::from_secs(self.offer_ttl_secs),
            max_offers_per_announce: self.max_offers_per_announce,
            max_peers_per_swarm: self.max_peers_per_swarm,
            max_swarms_per_conn: self.max_swarms_per_connection,
            max_pending_offers_per_peer: self.max_pending_offers_per_peer,
            max_pending_offers_to_peer: self.max_pending_offers_to_peer,
            max_scrape_swarms: self.max_scrape_swarms,
            match_sample: self.match_sample,
            thin_swarm_viewers: self.thin_swarm_viewers,
            position_window: self.position_window,
            max_standby_seeds: self.max_standby_seeds,
            demand_interval: Duration::from_secs(self.demand_interval_secs),
            ..RegistryConfig::default()
        }
    }
}

impl Config {
    /// Parses a TOML configuration and checks it.
    pub fn from_toml(text: &str) -> anyhow::Result<Self> {
        let config: Self = toml::from_str(text).context("parsing the configuration")?;
        config.validate()?;
        Ok(config)
    }

    /// The configuration as TOML (what `--print-config` prints).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("the configuration serializes")
    }

    /// The configuration as TOML for people to read (`--print-config`): as [`Config::to_toml`],
    /// but a `metrics_token` is commented out and not shown, so that the output can be kept or
    /// logged without the secret.
    pub fn to_toml_redacted(&self) -> String {
        if self.metrics_token.is_empty() {
            return self.to_toml();
        }
        let shown = Self {
            metrics_token: String::new(),
            ..self.clone()
        };
        shown.to_toml().replacen(
            "metrics_token = \"\"",
            "# metrics_token = \"…\" (set; not shown)",
            1,
        )
    }

    /// Applies overrides from the process environment (see [`Config::apply_env_from`]).
    pub fn apply_env(&mut self) -> anyhow::Result<()> {
        self.apply_env_from(std::env::vars())
    }

    /// Applies overrides from `(name, value)` pairs, in this order:
    /// - `SWARMCDN_TRACKER_LISTEN`, `SWARMCDN_TRACKER_LOG` and `SWARMCDN_TRACKER_METRICS_LISTEN`
    ///   set `listen`, `log` and `metrics_listen` (empty: none);
    /// - `SWARMCDN_TRACKER__<SECTION>__<FIELD>` (double underscores; the prefix in capitals, the
    ///   section and field names in any case) sets any field, e.g.
    ///   `SWARMCDN_TRACKER__LIMITS__MAX_CONNECTIONS_PER_IP=1000`, in the order of their names.
    ///   The value is read as a TOML value (`1000`, `2.5`, `true`, `["a"]`), else as a string.
    ///
    /// Unknown names and values of the wrong type are errors, as in the file; on an error the
    /// configuration is left as it was.
    pub fn apply_env_from(
        &mut self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<()> {
        let mut new = self.clone();
        let mut generic = Vec::new();
        for (name, value) in vars {
            match name.as_str() {
                "SWARMCDN_TRACKER_LISTEN" => {
                    new.listen = value
                        .parse()
                        .with_context(|| format!("SWARMCDN_TRACKER_LISTEN={value:?}"))?;
                }
                "SWARMCDN_TRACKER_LOG" => new.log = value,
                "SWARMCDN_TRACKER_METRICS_LISTEN" => {
                    new.metrics_listen = match value.as_str() {
                        "" => None,
                        v => Some(v.parse().with_context(|| {
                            format!("SWARMCDN_TRACKER_METRICS_LISTEN={value:?}")
                        })?),
                    };
                }
                _ if name.starts_with(ENV_PREFIX) => generic.push((name, value)),
                _ => {}
            }
        }
        // Sorted, so that the result does not depend on the environment's order.
        generic.sort();
        for (name, value) in generic {
            let path = name[ENV_PREFIX.len()..].to_ascii_lowercase();
            let keys: Vec<&str> = path.split("__").collect();
            let (field, sections) = keys.split_last().expect("split yields at least one item");
            let mut table = toml::Table::try_from(&new).context("the configuration as TOML")?;
            let mut t = &mut table;
            for section in sections {
                t = t
                    .get_mut(*section)
                    .and_then(toml::Value::as_table_mut)
                    .with_context(|| format!("{name}: no section {section:?}"))?;
            }
            match t.get(*field) {
                None => anyhow::bail!("{name}: no field {field:?}"),
                Some(toml::Value::Table(_)) => {
                    anyhow::bail!("{name}: {field:?} is a section, name one of its fields")
                }
                Some(_) => {}
            }
            let parsed = env_value(&value);
            let as_string = !parsed.is_str();
            t.insert((*field).to_owned(), parsed);
            new = match table.clone().try_into() {
                Ok(config) => config,
                // `log = "true"`: a value that reads as TOML may still be meant as a string.
                Err(_) if as_string => {
                    t_insert(
                        &mut table,
                        sections,
                        field,
                        toml::Value::String(value.clone()),
                    );
                    table
                        .try_into()
                        .with_context(|| format!("{name}={value:?}"))?
                }
                Err(e) => return Err(e).with_context(|| format!("{name}={value:?}")),
            };
        }
        *self = new;
        Ok(())
    }

    /// Cross-field checks, done once at startup.
    pub fn validate(&self) -> anyhow::Result<()> {
        let l = &self.limits;
        ensure!(
            l.max_message_bytes >= 1024,
            "limits.max_message_bytes must be at least 1024"
        );
        ensure!(
            l.messages_per_second > 0.0 && l.messages_per_second.is_finite(),
            "limits.messages_per_second must be positive"
        );
        ensure!(
            l.message_burst >= 1,
            "limits.message_burst must be at least 1"
        );
        ensure!(
            l.max_connections >= 1,
            "limits.max_connections must be at least 1"
        );
        ensure!(
            l.max_connections_per_ip >= 1,
            "limits.max_connections_per_ip must be at least 1"
        );
        ensure!(
            l.outgoing_queue >= 1,
            "limits.outgoing_queue must be at least 1"
        );
        ensure!(
            l.write_timeout_ms >= 1,
            "limits.write_timeout_ms must be at least 1"
        );
        ensure!(
            l.header_timeout_ms >= 1,
            "limits.header_timeout_ms must be at least 1"
        );
        ensure!(
            self.metrics_listen
                .is_none_or(|m| m != self.listen || m.port() == 0),
            "metrics_listen must differ from listen"
        );
        ensure!(
            self.metrics_token == self.metrics_token.trim()
                && !self.metrics_token.contains(char::is_control),
            "metrics_token must not hold spaces at its ends nor control characters"
        );
        let keys = self.tokens.public_keys()?;
        ensure!(
            !self.tokens.required || !keys.is_empty(),
            "tokens.required needs at least one key in tokens.keys"
        );
        swarmcdn_core::registry::Registry::new(self.swarm.registry(), 0)
            .map(drop)
            .map_err(|e| anyhow::anyhow!("swarm: {e}"))
    }
}

/// Prefix of the generic environment overrides.
const ENV_PREFIX: &str = "SWARMCDN_TRACKER__";

/// Sets `sections.field` in `table` (the sections exist: checked by the caller).
fn t_insert(table: &mut toml::Table, sections: &[&str], field: &str, value: toml::Value) {
    let mut t = table;
    for section in sections {
        t = t
            .get_mut(*section)
            .and_then(toml::Value::as_table_mut)
            .expect("the caller checked the section exists");
    }
    t.insert(field.to_owned(), value);
}

/// An environment value as TOML: a number, boolean or array if it parses as one, else a string.
fn env_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_config_parses_back_to_itself() {
        let c = Config::default();
        assert_eq!(Config::from_toml(&c.to_toml()).unwrap(), c);
        assert_eq!(Config::from_toml("").unwrap(), c);
    }

    #[test]
    fn unknown_fields_and_bad_values_are_refused() {
        assert!(Config::from_toml("listn = \"127.0.0.1:1\"").is_err());
        assert!(Config::from_toml("[limits]\nmax_mesage_bytes = 5").is_err());
        let err = Config::from_toml("[swarm]\npeer_timeout_secs = 10").unwrap_err();
        assert!(err.to_string().contains("peer_timeout"), "{err}");
        assert!(Config::from_toml("[limits]\nmessages_per_second = 0.0").is_err());
        assert!(Config::from_toml("metrics_token = \" secret\"").is_err());
        let same = "listen = \"127.0.0.1:7\"\nmetrics_listen = \"127.0.0.1:7\"";
        assert!(Config::from_toml(same).is_err());
        let c =
            Config::from_toml("metrics_listen = \"127.0.0.1:8\"\nmetrics_token = \"s3\"").unwrap();
        assert_eq!(Config::from_toml(&c.to_toml()).unwrap(), c);
        // Printed for people: the token is not shown, and the text still parses.
        let shown = c.to_toml_redacted();
        assert!(!shown.contains("s3"), "{shown}");
        assert!(shown.contains("# metrics_token"), "{shown}");
        let back = Config::from_toml(&shown).unwrap();
        assert_eq!(
            (back.metrics_token.as_str(), back.metrics_listen),
            ("", c.metrics_listen)
        );
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn environment_overrides_any_field() {
        let mut c = Config::default();
        c.apply_env_from(env(&[
            ("SWARMCDN_TRACKER_LISTEN", "127.0.0.1:9"),
            ("SWARMCDN_TRACKER_LOG", "debug"),
            ("SWARMCDN_TRACKER__LIMITS__MAX_CONNECTIONS_PER_IP", "1000"),
            ("SWARMCDN_TRACKER__LIMITS__MESSAGES_PER_SECOND", "2.5"),
            ("swarmcdn_tracker__swarm__max_peers_per_swarm", "9"),
            ("SWARMCDN_TRACKER__TOKENS__REQUIRED", "false"),
            ("SWARMCDN_TRACKER__TOKENS__KEYS", "[]"),
            ("SWARMCDN_TRACKER_METRICS_LISTEN", "127.0.0.1:10"),
            ("SWARMCDN_TRACKER__METRICS_TOKEN", "12345"),
            ("PATH", "/bin"),
        ]))
        .unwrap();
        assert_eq!(c.metrics_listen, Some("127.0.0.1:10".parse().unwrap()));
        // A token that reads as a number is still a string.
        assert_eq!(c.metrics_token, "12345");
        assert_eq!(c.listen, "127.0.0.1:9".parse().unwrap());
        assert_eq!(c.log, "debug");
        assert_eq!(c.limits.max_connections_per_ip, 1000);
        assert_eq!(c.limits.messages_per_second, 2.5);
        // Lower case does not match the prefix: ignored.
        assert_eq!(c.swarm, SwarmConfig::default());
        // A string field from a bare word.
        c.apply_env_from(env(&[(
            "SWARMCDN_TRACKER__LOG",
            "warn,swarmcdn_tracker=debug",
        )]))
        .unwrap();
        assert_eq!(c.log, "warn,swarmcdn_tracker=debug");
        // The result round-trips like a file.
        assert_eq!(Config::from_toml(&c.to_toml()).unwrap(), c);
    }

    #[test]
    fn bad_environment_overrides_are_refused() {
        let mut c = Config::default();
        for bad in [
            ("SWARMCDN_TRACKER__LIMITS__NO_SUCH_FIELD", "1"),
            ("SWARMCDN_TRACKER__NOSECTION__FIELD", "1"),
            ("SWARMCDN_TRACKER__LIMITS__MAX_CONNECTIONS", "many"),
            ("SWARMCDN_TRACKER__LIMITS", "1"),
            ("SWARMCDN_TRACKER_LISTEN", "nowhere"),
            ("SWARMCDN_TRACKER_METRICS_LISTEN", "nowhere"),
        ] {
            let err = c.apply_env_from(env(&[bad])).unwrap_err();
            assert!(format!("{err:#}").contains(bad.0), "{bad:?}: {err:#}");
        }
        assert_eq!(c, Config::default(), "a refused override changes nothing");
    }

    #[test]
    fn partial_files_keep_defaults() {
        let c = Config::from_toml("[swarm]\nmax_peers_per_swarm = 7").unwrap();
        assert_eq!(c.swarm.max_peers_per_swarm, 7);
        assert_eq!(c.swarm.registry().max_peers_per_swarm, 7);
        assert_eq!(c.limits, Limits::default());
    }
}
