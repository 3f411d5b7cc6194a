//! weft's own log lines (not access logs) in Envoy's application-log formats: the spdlog
//! patterns of `--log-format` and of the bootstrap's `application_log_config` (`text_format`,
//! or `json_format` whose values are patterns), rendered for `tracing` events.
//!
//! Only the pattern flags weft can honour are accepted; any other flag is refused by name, so a
//! format never prints something other than what its user asked for. Times are UTC.

use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::registry::LookupSpan;

/// The flags a pattern may use, for error messages and `--help`.
pub const SUPPORTED_FLAGS: &str = "%v %j %l %L %n %t %P %Y %C %m %d %H %M %S %e %f %F %T %X %D %R %E %z %g %s %# %@ %%";

/// One piece of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    /// `%v`: the message, then the event's fields as `key=value`.
    Message,
    /// `%j`: the same, escaped for a JSON string (Envoy's own flag).
    MessageJson,
    /// `%l`: `trace`, `debug`, `info`, `warning`, `error`.
    Level,
    /// `%L`: `T`, `D`, `I`, `W`, `E`.
    LevelShort,
    /// `%n`: the logger; in weft, the module that logged.
    Logger,
    /// `%t`: the thread.
    Thread,
    /// `%P`: the process id.
    Pid,
    Year,
    Year2,
    Month,
    Day,
    Hour,
    Minute,
    Second,
    Millis,
    Micros,
    Nanos,
    /// `%T`, `%X`: `HH:MM:SS`.
    Time,
    /// `%D`: `MM/DD/YY`.
    ShortDate,
    /// `%R`: `HH:MM`.
    HourMinute,
    /// `%E`: seconds since the epoch.
    Epoch,
    /// `%z`: the UTC offset, always `+00:00`.
    Offset,
    /// `%g`: the source file as compiled.
    File,
    /// `%s`: the source file's name.
    ShortFile,
    /// `%#`: the source line.
    Line,
    /// `%@`: `file:line`.
    Location,
}

/// A parsed spdlog pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern(Vec<Piece>);

/// How weft's log lines look.
#[derive(Debug, Clone, Default)]
pub enum LogFormat {
    /// weft's own layout (tracing's), when nothing was asked for.
    #[default]
    Default,
    Pattern(Pattern),
}

/// A log event, as a pattern sees it.
pub struct Record<'a> {
    pub level: Level,
    pub target: &'a str,
    pub file: Option<&'a str>,
    pub line: Option<u32>,
    /// The message followed by the other fields.
    pub message: String,
    pub time: SystemTime,
}

impl Pattern {
    /// Parses spdlog syntax; refuses flags weft cannot honour, naming them.
    pub fn parse(s: &str) -> Result<Pattern, String> {
        let mut out = Vec::new();
        let mut text = String::new();
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                text.push(c);
                continue;
            }
            let Some(flag) = chars.next() else {
                return Err("the pattern ends with a lone '%' (write %% for a percent sign)".into());
            };
            let piece = match flag {
                '%' => {
                    text.push('%');
                    continue;
                }
                'v' => Piece::Message,
                'j' => Piece::MessageJson,
                'l' => Piece::Level,
                'L' => Piece::LevelShort,
                'n' => Piece::Logger,
                't' => Piece::Thread,
                'P' => Piece::Pid,
                'Y' => Piece::Year,
                'C' => Piece::Year2,
                'm' => Piece::Month,
                'd' => Piece::Day,
                'H' => Piece::Hour,
                'M' => Piece::Minute,
                'S' => Piece::Second,
                'e' => Piece::Millis,
                'f' => Piece::Micros,
                'F' => Piece::Nanos,
                'T' | 'X' => Piece::Time,
                'D' => Piece::ShortDate,
                'R' => Piece::HourMinute,
                'E' => Piece::Epoch,
                'z' => Piece::Offset,
                'g' => Piece::File,
                's' => Piece::ShortFile,
                '#' => Piece::Line,
                '@' => Piece::Location,
                other => {
                    return Err(format!("%{other} is not a pattern flag weft supports (it supports {SUPPORTED_FLAGS})"));
                }
            };
            if !text.is_empty() {
                out.push(Piece::Text(std::mem::take(&mut text)));
            }
            out.push(piece);
        }
        if !text.is_empty() {
            out.push(Piece::Text(text));
        }
        Ok(Pattern(out))
    }

    /// Envoy's `json_format`: the object is written as JSON text whose string values are
    /// patterns (so `%j` gives a JSON-safe message, as in Envoy).
    pub fn from_json_format(fields: &serde_json::Map<String, serde_json::Value>) -> Result<Pattern, String> {
        for (k, v) in fields {
            if let serde_json::Value::String(s) = v {
                Pattern::parse(s).map_err(|e| format!("{k}: {e}"))?;
            }
        }
        // serde_json escapes quotes and backslashes but leaves '%' alone, so the flags survive.
        Pattern::parse(&serde_json::Value::Object(fields.clone()).to_string())
    }

    pub fn render(&self, r: &Record<'_>) -> String {
        let mut out = String::new();
        let since = r.time.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = since.as_secs();
        let (year, month, day) = civil_from_days((secs / 86_400) as i64);
        let sod = secs % 86_400;
        let (h, mi, s) = (sod / 3600, (sod / 60) % 60, sod % 60);
        let nanos = since.subsec_nanos();
        use fmt::Write as _;
        for p in &self.0 {
            let _ = match p {
                Piece::Text(t) => out.write_str(t),
                Piece::Message => out.write_str(&r.message),
                Piece::MessageJson => {
                    let quoted = serde_json::Value::String(r.message.clone()).to_string();
                    out.write_str(&quoted[1..quoted.len() - 1])
                }
                Piece::Level => out.write_str(level_name(&r.level)),
                Piece::LevelShort => out.write_str(&level_name(&r.level)[..1].to_uppercase()),
                Piece::Logger => out.write_str(r.target),
                Piece::Thread => out.write_str(&thread_number()),
                Piece::Pid => write!(out, "{}", std::process::id()),
                Piece::Year => write!(out, "{year:04}"),
                Piece::Year2 => write!(out, "{:02}", year.rem_euclid(100)),
                Piece::Month => write!(out, "{month:02}"),
                Piece::Day => write!(out, "{day:02}"),
                Piece::Hour => write!(out, "{h:02}"),
                Piece::Minute => write!(out, "{mi:02}"),
                Piece::Second => write!(out, "{s:02}"),
                Piece::Millis => write!(out, "{:03}", nanos / 1_000_000),
                Piece::Micros => write!(out, "{:06}", nanos / 1_000),
                Piece::Nanos => write!(out, "{nanos:09}"),
                Piece::Time => write!(out, "{h:02}:{mi:02}:{s:02}"),
                Piece::ShortDate => write!(out, "{month:02}/{day:02}/{:02}", year.rem_euclid(100)),
                Piece::HourMinute => write!(out, "{h:02}:{mi:02}"),
                Piece::Epoch => write!(out, "{secs}"),
                Piece::Offset => out.write_str("+00:00"),
                Piece::File => out.write_str(r.file.unwrap_or("")),
                Piece::ShortFile => out.write_str(r.file.map(|f| f.rsplit('/').next().unwrap_or(f)).unwrap_or("")),
                Piece::Line => write!(out, "{}", r.line.unwrap_or(0)),
                Piece::Location => match (r.file, r.line) {
                    (Some(f), Some(l)) => write!(out, "{f}:{l}"),
                    _ => Ok(()),
                },
            };
        }
        out
    }
}

/// An Envoy log level (`-l`, `--component-log-level`, `/logging`) as a `tracing` filter level.
/// weft has no level above error, so `critical` is `error`.
pub fn level_directive(l: &str) -> Result<&'static str, String> {
    Ok(match l {
        "trace" => "trace",
        "debug" => "debug",
        "info" => "info",
        "warning" | "warn" => "warn",
        "error" | "critical" => "error",
        "off" => "off",
        other => return Err(format!("invalid log level {other:?}: use trace, debug, info, warning, error, critical or off")),
    })
}

/// Envoy's logger components, in the order Envoy 1.40 lists them (`/logging`), and the weft
/// modules that do each one's job. A component with no modules is one weft has no code for
/// (lua, redis, …): setting its level is accepted and, as in an Envoy that runs none of that
/// code, changes no line.
pub const COMPONENTS: &[(&str, &[&str])] = &[
    ("a2a", &[]),
    ("admin", &["weft_proxy::admin"]),
    ("ai_protocol_manager", &[]),
    ("alternate_protocols_cache", &[]),
    ("aws", &[]),
    ("assert", &[]),
    ("backtrace", &[]),
    ("basic_auth", &[]),
    ("cache_filter", &[]),
    ("client", &[]),
    ("config", &["weft_proxy::config", "weft_proxy::dynamic", "weft_xds::load"]),
    ("connection", &["weft_proxy::transport", "weft_proxy::sniff"]),
    ("conn_handler", &["weft_proxy::listener"]),
    ("compression", &[]),
    ("credential_injector", &[]),
    ("decompression", &[]),
    ("dns", &[]),
    ("dubbo", &[]),
    ("envoy_bug", &[]),
    ("ext_authz", &[]),
    ("ext_proc", &[]),
    ("rocketmq", &[]),
    ("file", &["weft_proxy::access_log"]),
    ("filter", &["weft_proxy::tcp", "weft_proxy::http::fault"]),
    ("forward_proxy", &[]),
    ("geolocation", &[]),
    ("grpc", &["weft_xds::ads_client"]),
    ("happy_eyeballs", &[]),
    ("hc", &["weft_proxy::upstream::health"]),
    ("health_checker", &[]),
    ("http", &["weft_proxy::http"]),
    ("http2", &[]),
    ("hystrix", &[]),
    ("init", &[]),
    ("io", &[]),
    ("jwt", &[]),
    ("json_rpc", &[]),
    ("kafka", &[]),
    ("key_value_store", &[]),
    ("lua", &[]),
    ("local_rate_limit", &[]),
    ("main", &["weft_proxy::server", "weft_proxy::drain", "weft::proxy_cmd"]),
    ("matcher", &[]),
    ("mcp", &[]),
    ("misc", &[]),
    ("mongo", &[]),
    ("multi_connection", &[]),
    ("notification", &[]),
    ("oauth2", &[]),
    ("quic", &[]),
    ("quic_stream", &[]),
    ("pool", &["weft_proxy::upstream::pool"]),
    ("rate_limit_quota", &[]),
    ("rbac", &[]),
    ("rds", &["weft_proxy::http::rds"]),
    ("redis", &[]),
    ("router", &["weft_proxy::http::router"]),
    ("runtime", &[]),
    ("stats", &["weft_proxy::stats"]),
    ("secret", &["weft_proxy::tls", "weft_proxy::identity", "weft_proxy::agent"]),
    ("sse", &[]),
    ("tap", &[]),
    ("testing", &[]),
    ("thrift", &[]),
    ("tracing", &["weft_proxy::trace"]),
    ("upstream", &["weft_proxy::upstream"]),
    ("udp", &[]),
    ("wasm", &[]),
    ("websocket", &["weft_proxy::http::upgrade"]),
    ("golang", &[]),
    ("stats_sinks", &[]),
    ("dynamic_modules", &[]),
    ("ip_tagging", &[]),
];

/// An Envoy level name as Envoy prints it.
fn envoy_level(l: &str) -> Result<&'static str, String> {
    level_directive(l)?;
    Ok(match l {
        "warn" => "warning",
        "trace" => "trace",
        "debug" => "debug",
        "info" => "info",
        "warning" => "warning",
        "error" => "error",
        "critical" => "critical",
        _ => "off",
    })
}

/// The level of every Envoy component: `-l` and `--component-log-level` at start, then
/// `/logging`. Turned into the `tracing` filter by [`LogLevels::directives`].
#[derive(Debug, Clone)]
pub struct LogLevels {
    levels: Vec<&'static str>,
}

impl LogLevels {
    /// A base level and component levels (`upstream:debug,config:trace`); refuses what Envoy
    /// refuses, with Envoy's reasons.
    pub fn parse(base: &str, components: Option<&str>) -> Result<LogLevels, String> {
        let mut l = LogLevels { levels: vec![envoy_level(base)?; COMPONENTS.len()] };
        for item in components.unwrap_or("").split(',').filter(|s| !s.is_empty()) {
            let Some((name, level)) = item.split_once(':') else {
                return Err(format!("component log level not correctly specified {item:?} (expected <component>:<level>)"));
            };
            if !l.set(name, level).map_err(|e| e.to_string())? {
                return Err(format!("invalid component specified {name:?}"));
            }
        }
        Ok(l)
    }

    /// Sets one component's level; false when no Envoy component has that name.
    pub fn set(&mut self, component: &str, level: &str) -> Result<bool, String> {
        let level = envoy_level(level)?;
        match COMPONENTS.iter().position(|(n, _)| *n == component) {
            Some(i) => {
                self.levels[i] = level;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Sets every component's level.
    pub fn set_all(&mut self, level: &str) -> Result<(), String> {
        let level = envoy_level(level)?;
        self.levels.iter_mut().for_each(|l| *l = level);
        Ok(())
    }

    /// The `tracing` filter: the most common level as the default, and each component whose
    /// level differs on its weft modules.
    pub fn directives(&self) -> String {
        let mut counts: Vec<(&str, usize)> = Vec::new();
        for l in &self.levels {
            match counts.iter_mut().find(|(n, _)| n == l) {
                Some(c) => c.1 += 1,
                None => counts.push((l, 1)),
            }
        }
        let base = counts.iter().max_by_key(|(_, c)| *c).map_or("info", |(l, _)| *l);
        let filter = |l: &str| level_directive(l).unwrap_or("info");
        let mut out = filter(base).to_string();
        let differing: Vec<&str> =
            COMPONENTS.iter().zip(&self.levels).filter(|(_, l)| **l != base).flat_map(|((_, t), _)| t.iter().copied()).collect();
        for ((_, targets), l) in COMPONENTS.iter().zip(&self.levels) {
            for t in *targets {
                // A module inside a differing one (the router in http) keeps its own level.
                let nested = differing.iter().any(|d| t.starts_with(&format!("{d}::")));
                if *l != base || nested {
                    out.push_str(&format!(",{t}={}", filter(l)));
                }
            }
        }
        out
    }

    /// Envoy's `/logging` listing: `active loggers:` then `  <name>: <level>` per component.
    pub fn listing(&self) -> String {
        let mut out = String::from("active loggers:\n");
        for ((n, _), l) in COMPONENTS.iter().zip(&self.levels) {
            out.push_str(&format!("  {n}: {l}\n"));
        }
        // Envoy ends the listing with an empty line.
        out.push('\n');
        out
    }
}

/// The `tracing` filter for a base level and Envoy component levels (see [`LogLevels::parse`]).
pub fn filter_directives(base: &str, components: Option<&str>) -> Result<String, String> {
    LogLevels::parse(base, components).map(|l| l.directives())
}

/// Envoy's level names.
fn level_name(l: &Level) -> &'static str {
    match *l {
        Level::TRACE => "trace",
        Level::DEBUG => "debug",
        Level::INFO => "info",
        Level::WARN => "warning",
        Level::ERROR => "error",
    }
}

/// The number of the current thread (`ThreadId(7)` → `7`).
fn thread_number() -> String {
    let id = format!("{:?}", std::thread::current().id());
    id.trim_start_matches("ThreadId(").trim_end_matches(')').to_string()
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Collects an event's message and fields as `message key=value …`.
#[derive(Default)]
struct Collect {
    message: String,
    fields: String,
}

impl Visit for Collect {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        use fmt::Write as _;
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        use fmt::Write as _;
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }
}

/// A `tracing` event formatter whose format can be replaced once the bootstrap is read
/// (`application_log_config`), after logging has started.
#[derive(Clone, Default)]
pub struct Formatter {
    current: Arc<ArcSwap<LogFormat>>,
    default: format::Format,
}

impl Formatter {
    pub fn new(f: LogFormat) -> Self {
        Formatter { current: Arc::new(ArcSwap::from_pointee(f)), default: format::Format::default() }
    }
    pub fn set(&self, f: LogFormat) {
        self.current.store(Arc::new(f));
    }
}

impl<S, N> FormatEvent<S, N> for Formatter
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let current = self.current.load();
        let pattern = match &**current {
            LogFormat::Default => return self.default.format_event(ctx, writer, event),
            LogFormat::Pattern(p) => p,
        };
        let mut c = Collect::default();
        event.record(&mut c);
        let meta = event.metadata();
        let rec = Record {
            level: *meta.level(),
            target: meta.target(),
            file: meta.file(),
            line: meta.line(),
            message: format!("{}{}", c.message, c.fields),
            time: SystemTime::now(),
        };
        writeln!(writer, "{}", pattern.render(&rec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(msg: &str) -> Record<'static> {
        Record {
            level: Level::WARN,
            target: "weft_proxy::server",
            file: Some("crates/proxy/src/server.rs"),
            line: Some(42),
            message: msg.into(),
            // 2024-02-29T13:04:05.123456789Z
            time: UNIX_EPOCH + std::time::Duration::new(1_709_211_845, 123_456_789),
        }
    }

    #[test]
    fn envoy_default_and_istio_patterns_render() {
        let p = Pattern::parse("[%Y-%m-%d %T.%e][%l][%n] [%g:%#] %v").expect("parse");
        assert_eq!(p.render(&rec("hi")), "[2024-02-29 13:04:05.123][warning][weft_proxy::server] [crates/proxy/src/server.rs:42] hi");
        let p = Pattern::parse("%Y-%m-%dT%T.%fZ\t%L\t%s:%#\t%v%%").expect("parse");
        assert_eq!(p.render(&rec("x")), "2024-02-29T13:04:05.123456Z\tW\tserver.rs:42\tx%");
    }

    #[test]
    fn json_format_escapes_the_message() {
        let m = serde_json::json!({"level": "%l", "msg": "%j", "n": 1});
        let p = Pattern::from_json_format(m.as_object().expect("object")).expect("parse");
        let line = p.render(&rec("say \"hi\"\n"));
        let v: serde_json::Value = serde_json::from_str(&line).expect("valid JSON");
        assert_eq!(v, serde_json::json!({"level": "warning", "msg": "say \"hi\"\n", "n": 1}));
    }

    #[test]
    fn logging_levels_list_and_nest_like_envoy() {
        let mut l = LogLevels::parse("info", Some("http:debug")).expect("parse");
        assert_eq!(
            l.directives(),
            "info,weft_proxy::http::fault=info,weft_proxy::http=debug,weft_proxy::http::rds=info,weft_proxy::http::router=info,\
             weft_proxy::http::upgrade=info"
        );
        assert!(l.listing().starts_with("active loggers:\n  a2a: info\n  admin: info\n"));
        assert!(l.listing().contains("  http: debug\n"));
        assert_eq!(l.set("nope", "info"), Ok(false));
        assert!(l.set("router", "loud").is_err());
        l.set_all("warn").expect("level");
        assert_eq!(l.directives(), "warn");
        assert!(l.listing().contains("  main: warning\n"));
    }

    #[test]
    fn component_levels_map_to_weft_modules() {
        assert_eq!(filter_directives("info", None).as_deref(), Ok("info"));
        assert_eq!(
            filter_directives("warning", Some("upstream:debug,misc:error")).as_deref(),
            Ok("warn,weft_proxy::upstream::health=warn,weft_proxy::upstream::pool=warn,weft_proxy::upstream=debug")
        );
        assert_eq!(filter_directives("info", Some("bogus:debug")), Err("invalid component specified \"bogus\"".into()));
        assert!(filter_directives("info", Some("upstream")).unwrap_err().contains("not correctly specified"));
        assert!(filter_directives("info", Some("upstream:loud")).unwrap_err().contains("invalid log level \"loud\""));
    }

    #[test]
    fn unsupported_flags_are_named() {
        assert_eq!(Pattern::parse("%!").unwrap_err(), format!("%! is not a pattern flag weft supports (it supports {SUPPORTED_FLAGS})"));
        assert!(Pattern::parse("%-8l").unwrap_err().starts_with("%- is not"));
        assert!(Pattern::parse("abc%").is_err());
    }
}
